"""The throwaway broker is set up like NHN's Tjenestebuss: per namespace a direct exchange, per HER-id quorum
queues with a delivery limit that dead-letter through the exchange, each bound by its own name."""

from __future__ import annotations

from typing import Any

from gateway.testing.rabbit import Broker

NAMESPACE = "sio-test"
HER_IDS = ["8094866", "8142987"]


def test_namespace_exchange_and_queues(broker: Broker) -> None:
    broker.set_up_namespace(NAMESPACE, HER_IDS)
    broker.set_up_namespace(NAMESPACE, HER_IDS)  # declaring again with the same arguments is harmless

    exchange = broker.management("GET", f"/api/exchanges/%2F/{NAMESPACE}")
    assert (exchange["type"], exchange["durable"], exchange["auto_delete"]) == ("direct", True, False)

    bindings = broker.management("GET", f"/api/exchanges/%2F/{NAMESPACE}/bindings/source")
    bound = {(b["destination"], b["routing_key"]) for b in bindings if b["destination_type"] == "queue"}
    for her in HER_IDS:
        dead_letter = {"x-dead-letter-exchange": NAMESPACE, "x-dead-letter-routing-key": f"{her}_dl"}
        expected: dict[str, dict[str, Any]] = {
            f"{her}_async": dead_letter,
            f"{her}_sync": {**dead_letter, "x-message-ttl": 15_000},
            f"{her}_error": dead_letter,
            f"{her}_syncreply": dead_letter,
        }
        for name, arguments in expected.items():
            queue = broker.queue(name)
            assert (queue["type"], queue["durable"], queue["auto_delete"]) == ("quorum", True, False), name
            assert queue["arguments"] == {"x-queue-type": "quorum", "x-delivery-limit": 10, **arguments}, name
            assert (name, name) in bound
        dl = broker.queue(f"{her}_dl")
        assert (dl["type"], dl["durable"], dl["arguments"]) == ("quorum", True, {"x-queue-type": "quorum"})
        assert (f"{her}_dl", f"{her}_dl") in bound
        assert broker.queue_depth(f"{her}_async") == 0


def test_listens_on_loopback_only(broker: Broker) -> None:
    overview = broker.management("GET", "/api/overview")
    listeners = {entry["protocol"]: entry for entry in overview["listeners"]}
    assert set(listeners) == {"amqp", "clustering", "http"}
    assert (listeners["amqp"]["ip_address"], listeners["amqp"]["port"]) == ("127.0.0.1", broker.port)
    assert (listeners["clustering"]["ip_address"], listeners["clustering"]["port"]) == ("127.0.0.1", broker.dist_port)
    # the management listener shows ip_address "::" whatever it binds (3.10); the address it was given is here
    http = listeners["http"]["socket_opts"]
    assert (http["ip"], http["port"]) == ("127.0.0.1", broker.management_port)
    assert broker.amqp_url == f"amqp://guest:guest@127.0.0.1:{broker.port}"
