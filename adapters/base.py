"""The registry that finds transport adapters by name.

Built-in adapters are found by name (``memory``, ``http``, ``folder``); third parties register theirs
under the entry-point group ``gateway.adapters``::

    [project.entry-points."gateway.adapters"]
    sftp = "my_package.sftp:SftpTransport"

The contract they implement - ``Transport``, ``Packet``, ``InboundResult``, ``TransportContext`` - is
:mod:`gateway.transport`; it is re-exported here for adapters written against this module.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from gateway.errors import ConfigError
from gateway.transport import InboundHandler, InboundResult, Packet, Transport, TransportContext

__all__ = [
    "ENTRY_POINT_GROUP",
    "InboundHandler",
    "InboundResult",
    "Packet",
    "Transport",
    "TransportContext",
    "adapter_class",
    "known_adapters",
]

ENTRY_POINT_GROUP = "gateway.adapters"

_BUILT_IN = {
    "memory": "adapters.memory:MemoryTransport",
    "http": "adapters.http:HttpTransport",
    "folder": "adapters.folder:FolderTransport",
    "edi2": "adapters.edi2.transport:Edi2Transport",
    "amqp": "adapters.amqp.transport:AmqpTransport",
}


def known_adapters() -> dict[str, str]:
    """Every adapter name this installation knows: built-ins, then the entry-point group's."""
    found = dict(_BUILT_IN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep.value)
    return found


def adapter_class(name: str) -> type[Transport]:
    """The adapter class registered under ``name``, imported on first use."""
    target = known_adapters().get(name)
    if target is None:
        raise ConfigError(f"No transport adapter named {name!r}; known: {', '.join(sorted(known_adapters()))}.")
    module_name, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"Transport adapter {name!r} ({target}) cannot be loaded: {exc}.") from None
    if not (isinstance(cls, type) and issubclass(cls, Transport)):
        raise ConfigError(f"Transport adapter {name!r} ({target}) is not a Transport.")
    return cls
