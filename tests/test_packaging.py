"""Packaging and start-up: every subpackage ships, the CLI starts without heavy imports, examples parse."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml

from cotrain.mix.spec import parse_mixture
from tests.conftest import ROOT


def test_every_subpackage_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "cotrain").rglob("__init__.py")}
    assert found <= listed, f"missing from [tool.setuptools] packages: {sorted(found - listed)}"
    assert "cotrain_converters" in listed and config["package-dir"]["cotrain_converters"] == "converters"
    assert "converters" not in listed  # never a generic top-level name in site-packages


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


def test_py_typed_marker_ships() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert (ROOT / "cotrain" / "py.typed").is_file()
    assert any("py.typed" in patterns for patterns in config["package-data"].values())
