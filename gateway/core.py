"""The message core built from settings: catalog, compiled schemas, register, validator and router.

Built once per process (``serve``, ``replay``, ``validate``); everything here is immutable after start-up
and free of I/O frameworks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.config import Settings
from gateway.model.kinds import Catalog, load_catalog
from gateway.registry import Register, load_register
from gateway.routing import Router
from gateway.validation.schemas import SchemaSet
from gateway.validation.validator import Validator

__all__ = ["Core", "build_core", "build_validator"]


@dataclass(frozen=True)
class Core:
    settings: Settings
    catalog: Catalog
    schemas: SchemaSet
    register: Register
    validator: Validator
    router: Router

    def unchecked_kinds(self) -> list[str]:
        """Kinds whose business content is not schema-checked (no official schema configured)."""
        return [k.name for k in self.schemas.unchecked]


def build_validator(settings: Settings, *, register: Register | None, bundle: Path | None = None) -> Validator:
    """Load the catalog and compile the schemas once; ``register`` enables the receiver check (E21)."""
    catalog = load_catalog(settings.schemas.catalog)
    chosen = bundle if bundle is not None else _existing(settings.schemas.bundle)
    schemas = SchemaSet(catalog, chosen)
    return Validator(catalog, schemas, max_bytes=settings.schemas.max_message_bytes, register=register)


def build_core(settings: Settings, *, register: Register | None = None, bundle: Path | None = None) -> Core:
    """The whole message core: register (from the settings unless given), catalog, schemas, validator."""
    register = register if register is not None else load_register(settings.gateway.region)
    validator = build_validator(settings, register=register, bundle=bundle)
    return Core(settings, validator.catalog, validator.schemas, register, validator, Router(register, settings))


def _existing(bundle: Path | None) -> Path | None:
    """The configured bundle when it is there; a missing bundle is reported at start-up, not fatal."""
    return bundle if bundle is not None and bundle.is_dir() else None
