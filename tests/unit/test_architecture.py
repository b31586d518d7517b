"""Import direction: which layer may import which, read from the source with ast (nothing is imported).

| importer                                  | may not import                                                |
|-------------------------------------------|---------------------------------------------------------------|
| foundations (errors, registry, atomic,    | any other cotrain module                                      |
|   dist, progress, seeds)                  |                                                               |
| cotrain.media, cotrain.dataset            | convert, annotate, mix, action_tokens, model, train, eval,    |
|                                           |   serve, interop, lab, cli                                    |
| cotrain.model                             | mix, train, eval, serve, interop, lab, cli (the network only) |
| everything but cotrain.lab and cli        | cotrain.lab (tests and benchmarks may; the CLI is the top)    |
| everything outside cotrain.cli            | cotrain.cli (except `cotrain.__main__`)                       |
| cotrain (the library)                     | cotrain_converters: converters are found through the          |
|                                           |   `cotrain.converters` entry points only                      |

Function-local and TYPE_CHECKING imports count: they are dependencies all the same.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cotrain", "cotrain_converters")
FOUNDATIONS = ("cotrain.errors", "cotrain.registry", "cotrain.atomic", "cotrain.dist", "cotrain.progress",
               "cotrain.seeds")
LOWER = ("cotrain.media", "cotrain.dataset")
ABOVE_DATASET = ("cotrain.convert", "cotrain.annotate", "cotrain.mix", "cotrain.action_tokens", "cotrain.model",
                 "cotrain.train", "cotrain.eval", "cotrain.serve", "cotrain.interop", "cotrain.lab", "cotrain.cli")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


MODULES = all_modules()


def imports_of(name: str, path: Path) -> set[str]:
    """Every cotrain module `name` imports; `from pkg import mod` counts as importing pkg.mod."""
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".") if is_pkg else name.split(".")[:-1]
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES)
    return {m for m in found if m.split(".")[0] in PACKAGES}


def within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def violations(name: str, imported: set[str]) -> list[str]:
    above_foundations = tuple(m for m in MODULES if m.startswith("cotrain.") and not within(m, FOUNDATIONS))
    model_may_not = ("cotrain.mix", "cotrain.train", "cotrain.eval", "cotrain.serve", "cotrain.interop", "cotrain.lab",
                     "cotrain.cli")
    rules: list[tuple[bool, tuple[str, ...], str]] = [
        (within(name, FOUNDATIONS), above_foundations, "foundations import nothing above them"),
        (within(name, LOWER), ABOVE_DATASET, "media and the dataset contract sit below every other layer"),
        (within(name, ("cotrain.model",)), model_may_not, "the model is the network only"),
        (not within(name, ("cotrain.lab", "cotrain.cli")), ("cotrain.lab",),
         "the lab is built on the library, never imported by it (only the CLI on top exposes it)"),
        (not within(name, ("cotrain.cli", "cotrain.__main__")), ("cotrain.cli",),
         "the CLI is a shell over the library"),
        (within(name, ("cotrain",)), ("cotrain_converters",), "converters are reached through entry points only"),
    ]
    return [f"{name} imports {m}: {why}" for applies, banned, why in rules if applies
            for m in sorted(imported) if within(m, banned)]


def test_the_layers_are_where_the_rules_expect() -> None:
    # a rule over a package that no longer exists would pass for nothing
    for prefix in (*FOUNDATIONS, *LOWER, *ABOVE_DATASET):
        assert any(within(m, (prefix,)) for m in MODULES), f"{prefix} not found: update the rules"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_point_down(name: str) -> None:
    assert violations(name, imports_of(name, MODULES[name])) == []


def test_the_rules_catch_an_upward_import() -> None:
    assert violations("cotrain.model.vla", {"cotrain.train.checkpoint"})
    assert violations("cotrain.dataset.shards", {"cotrain.mix.loader"})
    assert violations("cotrain.mix.loader", {"cotrain.lab.sim.env"})
    assert violations("cotrain.convert.pipeline", {"cotrain_converters.lbm"})
    assert violations("cotrain.errors", {"cotrain.dataset.keys"})
    assert not violations("cotrain.lab.sim.env", {"cotrain.mix.loader", "cotrain.lab.sim.world"})
