"""One throwaway RabbitMQ broker for the AMQP tests (gateway/testing/rabbit.py), started once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.testing.rabbit import DEBIAN_SERVER, Broker, find_server


@pytest.fixture(scope="session", name="broker")
def _broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A running broker with its data, logs and config under the session's tmp dir. A missing RabbitMQ is a
    failure, not a skip: `./dev test` installs it, so a run without it has not tested the AMQP transport."""
    if find_server() is None:
        pytest.fail(
            f"rabbitmq-server is not installed (not on PATH, not at {DEBIAN_SERVER}); "
            "`./dev test` installs it (Debian package rabbitmq-server)"
        )
    broker = Broker(tmp_path_factory.mktemp("rabbitmq"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
