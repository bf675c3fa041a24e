"""A throwaway RabbitMQ broker for tests, benches and a dev run, set up like NHN's Helsenorge Tjenestebuss.

``Broker(base)`` runs the Debian ``rabbitmq-server`` as a child in its own process group with everything
under ``base``: its data (mnesia), its logs, its config, its Erlang cookie (``HOME``). It listens on free
loopback ports only (AMQP 0-9-1 and 1.0 share one, the management API another, Erlang distribution a third;
epmd is asked to bind loopback). Broker output goes to ``base/broker.log``, never to the test's stdout.

``set_up_namespace`` declares what NHN declares for a namespace: a durable direct exchange named after it and,
per HER-id, quorum queues ``<her>_async``, ``_sync``, ``_error`` and ``_syncreply`` (delivery limit 10,
dead-lettered through the exchange to ``<her>_dl``), each bound with its own name as routing key.

The queue counts of the management API are statistics, refreshed every ``collect_statistics_interval``
(set to 500 ms here, 5 s by default): ``queue_depth`` right after a send or a settle may still show the
count of a moment ago, so a test polls it until it settles.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from gateway.errors import GatewayError

__all__ = ["Broker", "ManagementError", "find_server"]

DEBIAN_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
USER = PASSWORD = "guest"  # noqa: S105 - the throwaway broker's only user, on loopback
DELIVERY_LIMIT = 10
SYNC_TTL_MS = 15_000
QUEUE_SUFFIXES = ("async", "sync", "error", "syncreply")


class ManagementError(GatewayError):
    """The test broker's management API answered with an error status; the message carries its reason."""

    event = "rabbit.management_error"

    def __init__(self, method: str, path: str, status: int, answer: str) -> None:
        super().__init__(f"{method} {path}: {status} {answer}")
        self.status = status


def find_server() -> Path | None:
    """The ``rabbitmq-server`` script to run, or None when RabbitMQ is not installed. Debian's ``/usr/sbin`` one is
    a wrapper that re-runs the script as user ``rabbitmq`` (another HOME, no access to a test's tmp dir) when
    started by root, or refuses for anyone else, so the real script beside it is taken instead."""
    found = shutil.which("rabbitmq-server")
    if found:
        real = Path(found).resolve()
        if real.name == "rabbitmq-script-wrapper":
            real = real.parent / "rabbitmq-server"
        if real.is_file():
            return real
    return DEBIAN_SERVER if DEBIAN_SERVER.is_file() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """One RabbitMQ node under ``base``; ports are picked once (the AMQP one may be given), so ``restart``
    keeps them (and the data)."""

    def __init__(
        self, base: Path, *, port: int | None = None, start_timeout_s: float = 120.0, stop_timeout_s: float = 30.0
    ) -> None:
        self.base = Path(base)
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.port = port or _free_port()  # a dev run's gateway config names its port; tests take a free one
        self.management_port = _free_port()
        self.dist_port = _free_port()
        self.nodename = f"gw{self.port}@localhost"
        self.log_file = self.base / "broker.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def amqp_url(self) -> str:
        return f"amqp://{USER}:{PASSWORD}@127.0.0.1:{self.port}"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.management_port}"

    def __enter__(self) -> Broker:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        """Start the node and wait until the management API answers and the AMQP port accepts; raises
        ``RuntimeError`` with the tail of the broker's logs when it exits first or ``start_timeout_s`` passes."""
        if self._process is not None:
            raise RuntimeError("the broker is already running")
        server = find_server()
        if server is None:
            raise RuntimeError(f"rabbitmq-server is not installed (neither on PATH nor at {DEBIAN_SERVER})")
        self.base.mkdir(parents=True, exist_ok=True)
        env = self._environment()
        with open(self.log_file, "ab") as log:  # the child keeps its own descriptor
            self._process = subprocess.Popen(
                [str(server)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.base,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout_s
        while not (self._answers() and self._accepts()):
            code = self._process.poll()
            if code is not None or time.monotonic() > deadline:
                self.stop()
                why = f"exited with {code}" if code is not None else f"did not come up within {self.start_timeout_s} s"
                raise RuntimeError(f"rabbitmq-server {why}:\n{self.log_tail()}")
            time.sleep(0.25)

    def stop(self) -> None:
        """TERM the broker's process group, KILL it after ``stop_timeout_s``, and wait for the node."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=self.stop_timeout_s)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            self._kill_group(process.pid)
        process.wait()
        self._kill_group(process.pid)  # a helper (erl_child_setup, inet_gethost) the node left behind

    def restart(self) -> None:
        """Stop and start again on the same ports with the same data dir: durable queues and their messages stay."""
        self.stop()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the console output and of the node's own log."""
        parts = []
        for path in (self.log_file, self.base / "log" / f"{self.nodename}.log"):
            if path.is_file():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path}\n" + "\n".join(text))
        return "\n".join(parts) or f"(no broker log under {self.base})"

    def management(self, method: str, path: str, body: Any = None) -> Any:
        """Call the management API (``path`` starts with ``/api/``); the decoded JSON answer, or None. Raises
        ``ManagementError`` for an error status, ``OSError`` when the API is not reachable."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.management_url + path, data=data, method=method)  # noqa: S310 - loopback
        request.add_header("Authorization", _AUTH)
        request.add_header("Content-Type", "application/json")
        try:
            with _OPENER.open(request, timeout=30) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:  # e.g. 400 PRECONDITION_FAILED - inequivalent arg 'x-...' for queue ...
            raise ManagementError(method, path, e.code, e.read().decode(errors="replace")) from None
        return json.loads(raw) if raw else None

    def set_up_namespace(
        self, namespace: str, her_ids: Iterable[str], *, vhost: str = "/", suffixes: Iterable[str] = QUEUE_SUFFIXES
    ) -> None:
        """Declare ``namespace``'s exchange and each HER-id's queues and bindings in ``vhost`` as NHN does
        (idempotent); a vhost other than ``/`` is made first, with all rights for the broker's user. ``suffixes``
        names other queues to make (a reply queue of a second gateway process, ``syncreply_2``).

        Queues belong to the vhost, not to the exchange: a HER-id's queues dead-letter through the namespace
        that declared them first, and declaring them again for another namespace fails (``ManagementError``,
        400 PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-exchange'). Tests sharing one broker take
        a vhost each (an AMQP client names it as ``vhost:<name>`` in its open frame)."""
        v = _q(vhost)
        if vhost != "/":
            self.management("PUT", f"/api/vhosts/{v}", {})
            self.management("PUT", f"/api/permissions/{v}/{USER}", {"configure": ".*", "write": ".*", "read": ".*"})
        self.management("PUT", f"/api/exchanges/{v}/{_q(namespace)}", {"type": "direct", "durable": True})
        for her in her_ids:
            dead_letter = f"{her}_dl"
            for suffix in suffixes:
                arguments: dict[str, Any] = {
                    "x-queue-type": "quorum",
                    "x-delivery-limit": DELIVERY_LIMIT,
                    "x-dead-letter-exchange": namespace,
                    "x-dead-letter-routing-key": dead_letter,
                }
                if suffix == "sync":
                    arguments["x-message-ttl"] = SYNC_TTL_MS
                self._declare(vhost, namespace, f"{her}_{suffix}", arguments)
            self._declare(vhost, namespace, dead_letter, {"x-queue-type": "quorum"})

    def queue(self, name: str, *, vhost: str = "/") -> dict[str, Any]:
        """The management API's view of queue ``name`` (arguments, counts - see the module doc)."""
        return dict(self.management("GET", f"/api/queues/{_q(vhost)}/{_q(name)}"))

    def queue_depth(self, name: str, *, vhost: str = "/") -> int:
        """Messages ready plus unacknowledged in ``name`` - as of the last statistics tick (up to ~0.5 s old)."""
        info = self.queue(name, vhost=vhost)
        return int(info.get("messages_ready", 0)) + int(info.get("messages_unacknowledged", 0))

    def purge(self, name: str, *, vhost: str = "/") -> None:
        """Drop the ready messages of ``name``."""
        self.management("DELETE", f"/api/queues/{_q(vhost)}/{_q(name)}/contents")

    def _declare(self, vhost: str, exchange: str, queue: str, arguments: dict[str, Any]) -> None:
        v = _q(vhost)
        self.management("PUT", f"/api/queues/{v}/{_q(queue)}", {"durable": True, "arguments": arguments})
        self.management("POST", f"/api/bindings/{v}/e/{_q(exchange)}/q/{_q(queue)}", {"routing_key": queue})

    def _environment(self) -> dict[str, str]:
        config = self.base / "rabbitmq.conf"
        config.write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            f"management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {self.management_port}\n"
            f"loopback_users = none\ndefault_user = {USER}\ndefault_pass = {PASSWORD}\n"
            "collect_statistics_interval = 500\n"  # queue counts of the management API refreshed twice a second
        )
        plugins = self.base / "enabled_plugins"
        plugins.write_text("[rabbitmq_amqp1_0,rabbitmq_management].\n")
        env_file = self.base / "rabbitmq-env.conf"  # instead of /etc/rabbitmq/rabbitmq-env.conf
        env_file.touch()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            HOME=str(self.base),
            ERL_EPMD_ADDRESS="127.0.0.1",
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base / "log"),
            RABBITMQ_CONFIG_FILE=str(config),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.base / "advanced.config"),
            RABBITMQ_CONF_ENV_FILE=str(env_file),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(plugins),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        return env

    def _answers(self) -> bool:
        with contextlib.suppress(OSError, ValueError, ManagementError):  # refused, reset, 503 while booting
            self.management("GET", "/api/overview")
            return True
        return False

    def _accepts(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=2):
            return True
        return False

    @staticmethod
    def _kill_group(pgid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


_AUTH = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def _q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy
