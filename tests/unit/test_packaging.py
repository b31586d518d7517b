"""Packaging and start-up: every subpackage ships, the CLI starts without heavy imports, examples parse."""

from __future__ import annotations

import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest
import tomllib
import yaml

from cotrain.mix.spec import parse_mixture
from tests.helpers import ROOT


def test_every_package_is_found_and_shipped() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "package-dir" not in config  # the folders are the import names
    include = config["packages"]["find"]["include"]  # found, not listed
    found = {".".join(p.parent.relative_to(ROOT).parts) for pkg in ("cotrain", "cotrain_converters")
             for p in (ROOT / pkg).rglob("__init__.py")}
    assert all(any(fnmatch(name, pattern) for pattern in include) for name in found)
    assert not any(fnmatch(name, pattern) for pattern in include for name in ("converters", "tests", "benchmarks"))
    assert "py.typed" in config["package-data"]["*"] and (ROOT / "cotrain" / "py.typed").is_file()
    assert "*.yaml" in config["package-data"]["*"]  # the RLDS standardisation table ships with its converter


def test_cli_help_imports_nothing_heavy() -> None:
    code = ("import sys; from cotrain.cli.app import app; "
            "heavy = [m for m in ('torch', 'av', 'h5py', 'pyarrow', 'transformers', 'mcap', 'PIL', 'datasets') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("path", sorted((ROOT / "mixtures").rglob("*.yaml")), ids=lambda p: p.name)
def test_example_mixtures_parse(path: Path) -> None:
    spec = parse_mixture(yaml.safe_load(path.read_text()), str(path))
    assert spec.phases and spec.sources


def test_shipped_backbone_ships() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    sim = ROOT / "cotrain" / "lab" / "sim"
    files = sorted(p.relative_to(sim).as_posix() for p in (sim / "assets").rglob("*") if p.is_file())
    assert files == ["assets/sim-paligemma/config.json", "assets/sim-paligemma/model.safetensors"]
    assert all(any(fnmatch(f, pat) for pat in patterns["cotrain.lab.sim"]) for f in files)


def test_py_typed_marker_ships() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert (ROOT / "cotrain" / "py.typed").is_file()
    assert any("py.typed" in patterns for patterns in config["package-data"].values())
