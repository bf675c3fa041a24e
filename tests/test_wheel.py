"""A wheel is a product: built from the checkout, installed into a fresh venv, run outside the checkout.

The wheel is built from a copy of what pyproject.toml builds from (building in place would write ``build/``
and ``*.egg-info`` into a checkout others work in), with pip's build isolation: the setuptools that
pyproject.toml asks for is fetched (or taken from pip's cache), since a venv's own setuptools may be too old
to build wheels (3.11's ensurepip brings 65.5, without ``bdist_wheel``) or absent (3.12+).

It is installed with ``--no-deps --no-index`` into a venv without pip; only then does a ``.pth`` file make
this interpreter's site-packages (lxml, cryptography, ...) importable there, so nothing is downloaded twice.
A ``.pth`` line only adds a path: the ``.pth`` files in that folder - the checkout's editable finder among
them - are not run, and :func:`test_the_installed_package_is_the_wheel` proves that nothing of ``gateway``
or ``adapters`` comes from the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway import __version__
from gateway.config import PROJECT_ROOT
from gateway.model.kinds import load_catalog
from gateway.registry import load_register

from .conftest import FIXTURES

pytestmark = pytest.mark.slow

#: What pyproject.toml builds the wheel from.
_SOURCES = ("pyproject.toml", "README.md", "gateway", "adapters", "config", "schemas")
_ACCEPTED = "dialogmelding-1.1/helsefaglig-dialog-foresporsel.xml"
_REJECTED = "broken/not-well-formed.xml"


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    site: Path  # the venv's site-packages
    cwd: Path  # a working directory outside the checkout

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run a program of the venv's bin/ (``gateway``, ``python``) in ``cwd``, with a clean environment."""
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "PYTHON"))}
        return subprocess.run(
            [str(self.venv / "bin" / args[0]), *args[1:]],
            cwd=self.cwd,
            env={**clean, "PYTHONNOUSERSITE": "1", **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def python(self, code: str, env: dict[str, str] | None = None) -> Any:
        """What a snippet run by the venv's python prints as JSON."""
        done = self.run("python", "-c", code, env=env)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


def _call(*args: str | Path) -> None:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, f"{' '.join(map(str, args))}:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    tmp = tmp_path_factory.mktemp("wheel").resolve()  # the venv reports real paths
    src = tmp / "src"
    src.mkdir()
    for name in _SOURCES:
        if (PROJECT_ROOT / name).is_dir():
            shutil.copytree(PROJECT_ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(PROJECT_ROOT / name, src / name)
    _call(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", tmp / "dist", src)
    (wheel,) = (tmp / "dist").glob("sio_gateway-*.whl")

    venv = tmp / "venv"
    _call(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    _call(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", "--no-index", wheel)
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    ours = sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")})
    (site / "test-wheel-dependencies.pth").write_text("".join(f"{p}\n" for p in ours), encoding="utf-8")

    cwd = tmp / "elsewhere"
    cwd.mkdir()
    for name in (_ACCEPTED, _REJECTED):
        shutil.copy2(FIXTURES / name, cwd / Path(name).name)
    return Installed(wheel, venv, site, cwd)


def test_the_wheel_carries_every_package_and_shipped_file(installed: Installed) -> None:
    """Every package of the checkout, the store schema, the catalog, own XSDs and the default config."""
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    packages = {
        init.parent.relative_to(PROJECT_ROOT).as_posix()
        for top in ("gateway", "adapters")
        for init in (PROJECT_ROOT / top).rglob("__init__.py")
    }
    assert {p for p in packages if f"{p}/__init__.py" not in names} == set(), "add it to pyproject.toml"
    shipped = [
        *(PROJECT_ROOT / "config").glob("*.toml"),
        *(PROJECT_ROOT / "schemas").glob("*.toml"),
        *(PROJECT_ROOT / "schemas").glob("*.xsd"),
    ]
    assert len(shipped) >= 5
    expected = {f"gateway/resources/{p.relative_to(PROJECT_ROOT).as_posix()}" for p in shipped}
    assert expected | {"gateway/store/schema.sql", "gateway/py.typed"} <= names


def test_the_installed_package_is_the_wheel(installed: Installed) -> None:
    """``gateway`` and ``adapters`` are imported from the venv, never from the checkout or its editable finder."""
    seen = installed.python(
        "import json, sys, adapters.base, gateway.cli, gateway.core, gateway.service; print(json.dumps({"
        "'modules': {n: getattr(m, '__file__', None) for n, m in sys.modules.items()"
        " if n.partition('.')[0] in ('gateway', 'adapters')},"
        "'finders': [repr(f) for f in sys.meta_path]}))"
    )
    assert Path(seen["modules"]["gateway"]).is_relative_to(installed.site)
    assert {n for n, f in seen["modules"].items() if f and not Path(f).is_relative_to(installed.site)} == set()
    assert not any("editable" in f for f in seen["finders"])


def test_version_parties_schemas_and_validate_from_elsewhere(installed: Installed) -> None:
    """The commands the issue named work with the packaged default config, catalog and own schemas."""
    version = installed.run("gateway", "--version")
    assert (version.returncode, version.stdout.strip()) == (0, f"gateway {__version__}")

    parties = installed.run("gateway", "parties")
    assert parties.returncode == 0, parties.stderr
    register = load_register(PROJECT_ROOT / "config" / "sio-region.toml")
    assert [line.split("\t")[0] for line in parties.stdout.splitlines()] == [p.her_id for p in register]

    schemas = installed.run("gateway", "schemas")
    assert schemas.returncode == 0, schemas.stderr
    *kinds, bundle = schemas.stdout.splitlines()
    assert bundle == "# bundle: none configured"
    catalog = load_catalog(PROJECT_ROOT / "schemas" / "catalog.toml")
    assert [line.split("\t")[0] for line in kinds] == [k.name for k in catalog.kinds]
    assert {line.split("\t")[4] for line in kinds} == {"own schema", "envelope only", "none"}

    manifest = {e["file"]: e for e in tomllib.loads((FIXTURES / "manifest.toml").read_text("utf-8"))["fixture"]}
    accepted, rejected = Path(_ACCEPTED).name, Path(_REJECTED).name
    judged = installed.run("gateway", "validate", accepted, rejected)
    assert judged.returncode == 1
    assert judged.stdout.splitlines() == [
        f"{accepted}\tACCEPT\t-\t{manifest[_ACCEPTED]['kind']}",
        f"{rejected}\tREJECT\t{manifest[_REJECTED]['code']}\t-",
    ]


def test_the_packaged_default_keeps_its_data_in_the_working_directory(installed: Installed) -> None:
    """Installed, the default config's data dir is ``var`` of the working directory and it has no bundle."""
    probe = (
        "import json; from gateway.config import load_settings; s = load_settings(); print(json.dumps([str(p) if p"
        " else None for p in (s.source, s.gateway.region, s.schemas.catalog, s.data_dir, s.schemas.bundle)]))"
    )
    packaged = installed.site / "gateway" / "resources"
    source, region, catalog, data_dir, bundle = installed.python(probe)
    assert source == str(packaged / "config" / "gateway.toml")
    assert region == str(packaged / "config" / "sio-region.toml")
    assert catalog == str(packaged / "schemas" / "catalog.toml")
    assert (data_dir, bundle) == (str(installed.cwd / "var"), None)

    given = {"GATEWAY_DATA_DIR": "store", "GATEWAY_SCHEMAS_BUNDLE": "xsd"}
    *_, data_dir, bundle = installed.python(probe, env=given)
    assert (data_dir, bundle) == (str(installed.cwd / "store"), str(installed.cwd / "xsd"))
