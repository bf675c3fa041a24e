"""A throwaway PostgreSQL server for tests and benches: Debian's PostgreSQL, ``initdb`` into a directory of its
own, the server on a free loopback port as a child in its own process group, and gone again at ``stop``.

``initdb`` and the server refuse to run as root. Started by root (CI on this machine), the cluster lives in a
fresh directory under the system's temporary directory owned by Debian's ``postgres`` user, and both run as
that user; started by anyone else, under ``base`` as that user. Authentication is ``trust`` for the one
superuser, ``gateway``, on loopback only - nothing else can reach it. Settings are PostgreSQL's defaults
(``fsync`` and ``synchronous_commit`` on: what a gateway's promises rest on), with a small memory footprint.
Server output goes to a log file, never to the test's stdout.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType

import asyncpg

from gateway.testing.replay_processes import free_port

__all__ = ["PostgresServer", "find_binaries"]

USER = "gateway"
_DEBIAN = Path("/usr/lib/postgresql")


def find_binaries() -> Path | None:
    """The newest installed PostgreSQL's ``bin`` directory (``initdb``, ``postgres``), or None."""
    if not _DEBIAN.is_dir():
        return None
    versions = [p for p in _DEBIAN.iterdir() if re.fullmatch(r"\d+", p.name) and (p / "bin" / "initdb").is_file()]
    return max(versions, key=lambda p: int(p.name)) / "bin" if versions else None


class PostgresServer:
    """One cluster: ``start`` makes and starts it, ``dsn`` reaches its ``postgres`` database, ``stop`` ends it
    (and removes a directory it made for root)."""

    def __init__(self, base: Path, *, start_timeout_s: float = 60.0, stop_timeout_s: float = 30.0) -> None:
        self.base = Path(base)
        self.port = free_port()
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._owned: Path | None = None  # a directory made for the postgres user (started by root)
        self.root = self.base

    @property
    def dsn(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/postgres"

    def database_dsn(self, name: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{name}"

    async def create_database(self, prefix: str = "gw") -> str:
        """A fresh, empty database on this server; its DSN (a test or a bench run gets one of its own)."""
        name = f"{prefix}_{uuid.uuid4().hex[:16]}"
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.database_dsn(name)

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        """initdb, then the server; waits until it accepts connections. Raises ``RuntimeError`` with the tail
        of the server's log when it exits first or ``start_timeout_s`` passes."""
        if self._process is not None:
            raise RuntimeError("the server is already running")
        binaries = find_binaries()
        if binaries is None:
            raise RuntimeError(f"PostgreSQL is not installed (no {_DEBIAN}/<version>/bin/initdb)")
        user = self._run_as()
        if user is not None:
            self._owned = Path(tempfile.mkdtemp(prefix="gateway-pg-"))
            os.chown(self._owned, user.pw_uid, user.pw_gid)
            self.root = self._owned
        else:
            self.base.mkdir(parents=True, exist_ok=True)
        data, sockets = self.root / "data", self.root / "run"
        uid, gid = (user.pw_uid, user.pw_gid) if user is not None else (None, None)
        sockets.mkdir(exist_ok=True)
        if user is not None:
            os.chown(sockets, user.pw_uid, user.pw_gid)
        initdb = subprocess.run(
            [str(binaries / "initdb"), "-D", str(data), "-U", USER, "-A", "trust", "-E", "UTF8", "--locale=C"],
            capture_output=True,
            check=False,
            env=self._environment(user),
            user=uid,
            group=gid,
        )
        if initdb.returncode != 0:
            self._remove()
            raise RuntimeError(f"initdb failed: {initdb.stderr.decode(errors='replace')[-2000:]}")
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(sockets),
            "shared_buffers": "32MB",
            "max_connections": "50",
        }
        args = [str(binaries / "postgres"), "-D", str(data)]
        for name, value in settings.items():
            args += ["-c", f"{name}={value}"]
        with open(self.log_file, "ab") as log:
            if user is not None:
                os.chown(self.log_file, user.pw_uid, user.pw_gid)
            self._process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._environment(user),
                cwd=self.root,
                start_new_session=True,
                user=uid,
                group=gid,
            )
        deadline = time.monotonic() + self.start_timeout_s
        while not self._ready(binaries):
            code = self._process.poll()
            if code is not None or time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                why = f"exited with {code}" if code is not None else f"did not come up within {self.start_timeout_s} s"
                raise RuntimeError(f"postgres {why}:\n{tail}")
            time.sleep(0.1)

    def stop(self) -> None:
        """A fast shutdown (SIGINT: open transactions rolled back, the cluster consistent), KILL after
        ``stop_timeout_s``; then the directory made for root is removed."""
        process, self._process = self._process, None
        if process is not None:
            try:
                os.killpg(process.pid, signal.SIGINT)
                process.wait(timeout=self.stop_timeout_s)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        self._remove()

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_file.is_file():
            return f"(no server log at {self.log_file})"
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def _ready(self, binaries: Path) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
            probe = subprocess.run(
                [str(binaries / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, "-q"],
                check=False,
                capture_output=True,
            )
            return probe.returncode == 0
        return False

    @staticmethod
    def _run_as() -> pwd.struct_passwd | None:
        """Debian's ``postgres`` user when started by root (the server will not run as root), else None."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError("started as root, and there is no 'postgres' user to run PostgreSQL as") from None

    @staticmethod
    def _environment(user: pwd.struct_passwd | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        if user is not None:
            env["HOME"] = user.pw_dir
        return env

    def _remove(self) -> None:
        if self._owned is not None:
            shutil.rmtree(self._owned, ignore_errors=True)
            self._owned = None
