"""Shared test fixtures: paths to ../shared, the compiled message core, a clean environment."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from gateway.config import PROJECT_ROOT
from gateway.model.kinds import Catalog, load_catalog
from gateway.registry import Register, load_register
from gateway.validation.schemas import SchemaSet
from gateway.validation.validator import Validator

SHARED = PROJECT_ROOT.parent / "shared"
BUNDLE = SHARED / "standards" / "xsd"
SAMPLES = SHARED / "standards" / "samples"
FIXTURES = PROJECT_ROOT / "fixtures" / "messages"


def require_shared() -> None:
    """Conformance tests read ../shared; they may skip only outside CI when it is absent."""
    if BUNDLE.is_dir() and SAMPLES.is_dir():
        return
    if os.environ.get("CI"):
        pytest.fail(f"{SHARED} is missing, and CI must run the conformance tests")
    pytest.skip("../shared (official schemas and samples) is not beside this checkout")


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No GATEWAY_* setting of the developer's shell leaks into a test."""
    for key in list(os.environ):
        if key.startswith("GATEWAY_"):
            monkeypatch.delenv(key)
    yield


@pytest.fixture(scope="session", name="catalog")
def _catalog() -> Catalog:
    return load_catalog(PROJECT_ROOT / "schemas" / "catalog.toml")


@pytest.fixture(scope="session", name="register")
def _register() -> Register:
    return load_register(PROJECT_ROOT / "config" / "sio-region.toml")


@pytest.fixture(scope="session", name="official_schemas")
def _official_schemas(catalog: Catalog) -> SchemaSet:
    require_shared()
    return SchemaSet(catalog, BUNDLE)


@pytest.fixture(scope="session", name="own_schemas")
def _own_schemas(catalog: Catalog) -> SchemaSet:
    return SchemaSet(catalog, None)


@pytest.fixture(scope="session", name="validator")
def _validator(catalog: Catalog, official_schemas: SchemaSet) -> Validator:
    """The validator as `gateway validate --schemas ../shared/standards/xsd` builds it (no register)."""
    return Validator(catalog, official_schemas)


@pytest.fixture(scope="session", name="region_validator")
def _region_validator(catalog: Catalog, official_schemas: SchemaSet, register: Register) -> Validator:
    """The validator with the SiO register, so the receiver check (E21) applies."""
    return Validator(catalog, official_schemas, register=register)
