#!/usr/bin/env python3
"""Codemod for the layout of issue 19: move modules by layer and rewrite every reference to them.

Run once from the repository root of a clean checkout (stdlib only):

    python3 tools/restructure.py            # move, rewrite, write the new package files
    python3 tools/restructure.py --dry-run  # print the path and module mapping, change nothing

It is written to run on a tree that has moved on since it was written: files it does not name stay
where they are unless their folder moves (a new `cotrain/sim/foo.py` follows `cotrain/sim/` into
`cotrain/lab/sim/`), and every tracked text file has its imports and dotted/slashed module paths
rewritten by one mapping. What it does:

1. `git mv` each tracked file by the first matching rule of MOVES (an exact file, else the longest
   folder prefix). `converters/` becomes `cotrain_converters/`: the folder now has its import name,
   so `[tool.setuptools.packages.find]` can find it (a `package-dir` rename cannot be combined with
   `find`).
2. Rewrite, in one pass per file (so a new path is never rewritten again): `from P import mod`
   statements whose names are moved modules (split by new parent; a renamed module's uses in the
   file follow it), relative imports in the two packages (made absolute), then every dotted module
   path (`cotrain.manifest` -> `cotrain.dataset.manifest`, in imports, strings, entry points, mock
   targets, `python -m`) and every slashed source path (`cotrain/manifest.py`) outside those
   statements, longest key first, on word boundaries.
3. Rename the two `Normalizer` classes in the modules that define or import them.
4. pyproject: packages found instead of listed, package data by pattern, `py.typed` shipped.
5. Write the new package `__init__.py` files, `py.typed`, `cotrain/lab/demo/__main__.py`,
   `tests/test_architecture.py`, the packaging test and the README "Layout" section
   (from tools/restructure_templates/), and stage its own removal: it runs once.

It refuses to run on a tree that is already restructured, on a dirty tree, or when a source path it
names is missing or a target path exists: everything is checked before anything moves.
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent / "restructure_templates"
SELF = {"tools/restructure.py"}
SELF_PREFIX = "tools/restructure_templates/"

# old path -> new path. A key ending in "/" moves a folder (every tracked file below it, known or not).
MOVES: dict[str, str] = {
    # media
    "cotrain/imaging.py": "cotrain/media/image.py",
    "cotrain/video.py": "cotrain/media/video.py",
    # the on-disk dataset contract
    "cotrain/keys.py": "cotrain/dataset/keys.py",
    "cotrain/manifest.py": "cotrain/dataset/manifest.py",
    "cotrain/shards.py": "cotrain/dataset/shards.py",
    "cotrain/tarindex.py": "cotrain/dataset/shard_scan.py",
    "cotrain/shardindex.py": "cotrain/dataset/shard_index.py",
    "cotrain/stats.py": "cotrain/dataset/norm_stats.py",
    "cotrain/validate.py": "cotrain/dataset/validate.py",
    "cotrain/inspect.py": "cotrain/dataset/summary.py",
    "cotrain/preview.py": "cotrain/dataset/preview.py",
    "cotrain/dataset.py": "cotrain/dataset/sequential.py",
    "cotrain/mix/storage.py": "cotrain/dataset/storage.py",
    "cotrain/mix/reader.py": "cotrain/dataset/reader.py",
    # foundations: progress reporting is used by conversion and by validate
    "cotrain/convert/progress.py": "cotrain/progress.py",
    # reading JSON-lines source files is a converter helper, not part of the dataset contract
    "cotrain/jsonl.py": "cotrain/convert/jsonl.py",
    # annotation
    "cotrain/annotate.py": "cotrain/annotate/segments.py",
    "cotrain/primitives.py": "cotrain/annotate/primitives.py",
    # action tokens (not `tokenizers`, which is Hugging Face's package)
    "cotrain/tokenizers/": "cotrain/action_tokens/",
    # evaluation: run directory -> predictions
    "cotrain/evaluate.py": "cotrain/eval/offline.py",
    "cotrain/model/policy.py": "cotrain/eval/policy.py",
    # the lab: built on the library, never imported by it
    "cotrain/ablate/stats.py": "cotrain/lab/ablate/significance.py",
    "cotrain/ablate/": "cotrain/lab/ablate/",
    "cotrain/sim/": "cotrain/lab/sim/",
    "cotrain/demo.py": "cotrain/lab/demo/run.py",
    "cotrain/demo_corpus.py": "cotrain/lab/demo/corpus.py",
    "cotrain/demo_formats.py": "cotrain/lab/demo/formats.py",
    # converter families
    "converters/rlds.py": "cotrain_converters/rlds/converter.py",
    "converters/tfrecord.py": "cotrain_converters/rlds/tfrecord.py",
    "converters/tf_example.py": "cotrain_converters/rlds/tf_example.py",
    "converters/tfds_features.py": "cotrain_converters/rlds/tfds_features.py",
    "converters/oxe_table.py": "cotrain_converters/rlds/oxe_table.py",
    "converters/oxe_standardize.yaml": "cotrain_converters/rlds/oxe_standardize.yaml",
    "converters/mcap.py": "cotrain_converters/mcap/converter.py",
    "converters/mcap_decode.py": "cotrain_converters/mcap/decode.py",
    "converters/mcap_topics.py": "cotrain_converters/mcap/topics.py",
    "converters/lerobot.py": "cotrain_converters/lerobot/converter.py",
    "converters/lerobot_meta.py": "cotrain_converters/lerobot/meta.py",
    "converters/hdf5.py": "cotrain_converters/hdf5/files.py",
    "converters/robomimic.py": "cotrain_converters/hdf5/robomimic.py",
    "converters/aloha.py": "cotrain_converters/hdf5/aloha.py",
    "converters/coco.py": "cotrain_converters/vision_language/coco.py",
    "converters/img2dataset.py": "cotrain_converters/vision_language/img2dataset.py",
    "converters/hf_parquet.py": "cotrain_converters/vision_language/hf_parquet.py",
    "converters/vl_common.py": "cotrain_converters/vision_language/common.py",
    "converters/egodex.py": "cotrain_converters/human_video/egodex.py",
    "converters/video_keypoints.py": "cotrain_converters/human_video/video_keypoints.py",
    "converters/hand_pose.py": "cotrain_converters/human_video/hand_pose.py",
    "converters/human_caption.py": "cotrain_converters/human_video/caption.py",
    # lbm, tokens, annotations, source_files and anything new stay at the package root
    "converters/": "cotrain_converters/",
}

# (module that defines it, old name, new name): the two classes called `Normalizer`.
RENAMES: list[tuple[str, str, str]] = [
    ("cotrain.mix.normalize", "Normalizer", "StatsNormalizer"),
    ("cotrain.tokenizers.io", "Normalizer", "QuantileNormalizer"),
]
# modules that re-export a renamed class (an import from them names the same class)
REEXPORTS = {"cotrain.mix.transform": "cotrain.mix.normalize", "cotrain.tokenizers": "cotrain.tokenizers.io"}

# `python -m cotrain.demo` runs the demo package's __main__, not run.py
EXTRA_TEXT = {"-m cotrain.demo": "-m cotrain.lab.demo"}

# tree that tells us the codemod already ran
DONE_MARKERS = ["cotrain/dataset/manifest.py", "cotrain/lab", "cotrain_converters"]

TEXT_SUFFIXES = {".py", ".md", ".toml", ".yaml", ".yml", ".cfg", ".ini", ".txt", ".sh", ".rst"}
TEXT_NAMES = {"Makefile"}
PACKAGE_ROOTS = {"cotrain": "cotrain", "converters": "cotrain_converters"}


def fail(msg: str) -> None:
    print(f"restructure: {msg}", file=sys.stderr)
    raise SystemExit(1)


def git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


def module_of(path: str) -> str | None:
    """Dotted import name of a source path (old or new tree), or None outside the two packages."""
    parts = path.removesuffix("/").split("/")
    if parts[0] not in PACKAGE_ROOTS and parts[0] != "cotrain_converters":
        return None
    parts[0] = PACKAGE_ROOTS.get(parts[0], parts[0])
    if parts[-1].endswith(".py"):
        parts[-1] = parts[-1][:-3]
        if parts[-1] == "__init__":
            parts.pop()
    elif path.endswith("/"):
        pass
    else:
        return None
    return ".".join(parts)


def new_path(path: str) -> str | None:
    """Where a tracked file goes, or None when it stays."""
    if path in MOVES:
        return MOVES[path]
    dirs = [k for k in MOVES if k.endswith("/") and path.startswith(k)]
    if not dirs:
        return None
    best = max(dirs, key=len)
    return MOVES[best] + path[len(best):]


@dataclass
class Plan:
    moves: dict[str, str] = field(default_factory=dict)  # tracked file -> new path
    modules: dict[str, str] = field(default_factory=dict)  # dotted old -> new (module or package prefix)
    paths: dict[str, str] = field(default_factory=dict)  # slashed old -> new (file or folder)


def build_plan(tracked: list[str]) -> Plan:
    plan = Plan()
    for path in tracked:
        target = new_path(path)
        if target is not None:
            plan.moves[path] = target
    for old, new in MOVES.items():
        # a folder key keeps its slash only when it has no other (`converters/`, never the word)
        key = old if "/" not in old.removesuffix("/") else old.removesuffix("/")
        plan.paths[key] = new if key.endswith("/") else new.removesuffix("/")
        old_mod, new_mod = module_of(old), module_of(new)
        if old_mod and new_mod and old_mod != new_mod:
            plan.modules[old_mod] = new_mod
    # files moved by a folder rule under a renamed file rule keep the folder's mapping (prefix rewrite)
    for old, new in plan.moves.items():
        old_mod, new_mod = module_of(old), module_of(new)
        if old_mod and new_mod and old_mod != new_mod and not _by_prefix(plan.modules, old_mod) == new_mod:
            plan.modules[old_mod] = new_mod
    for old, new in plan.moves.items():  # every moved file by its exact path (docs cite them)
        plan.paths.setdefault(old, new)
    for mod, cls, new_cls in RENAMES:
        plan.modules[f"{mod}.{cls}"] = f"{map_module(plan.modules, mod)}.{new_cls}"
    return plan


def _by_prefix(modules: dict[str, str], name: str) -> str | None:
    """`name` rewritten by the longest matching key (a key matches itself or a dotted prefix)."""
    keys = [k for k in modules if name == k or name.startswith(k + ".")]
    if not keys:
        return None
    best = max(keys, key=len)
    return modules[best] + name[len(best):]


def map_module(modules: dict[str, str], name: str) -> str:
    return _by_prefix(modules, name) or name


def check_tree(tracked: list[str], plan: Plan) -> None:
    """Everything that must hold before the first `git mv`."""
    present = set(tracked)
    tracked_dirs = {p.rsplit("/", i)[0] for p in tracked for i in range(1, p.count("/") + 1)}
    done = [m for m in DONE_MARKERS if m in present or m in tracked_dirs]
    if done:
        fail(f"the tree is already restructured ({', '.join(done)} exists); run this on a tree that is not")
    missing = [k for k in MOVES
               if (k.removesuffix("/") not in tracked_dirs if k.endswith("/") else k not in present)]
    if missing:
        fail("source paths named in MOVES are missing (rename them in tools/restructure.py): " + ", ".join(missing))
    targets = list(plan.moves.values())
    clash = sorted({t for t in targets if targets.count(t) > 1} | {t for t in targets if t in present})
    if clash:
        fail("target paths already exist or are targeted twice: " + ", ".join(clash))
    if git("status", "--porcelain", "--untracked-files=no").strip():
        fail("the working tree has uncommitted changes; commit or stash them first")


# ---------------------------------------------------------------- rewriting


def key_regex(keys: list[str]) -> re.Pattern[str]:
    """One alternation, longest key first, each key bounded so `cotrain.keys` never matches `cotrain.keyset`.

    A top-level folder key (`converters/`) matches the folder itself only: paths into it are exact keys,
    so `docs/`'s relative link `converters/lerobot.md` (a doc, not the source folder) stays.
    """
    alts = "|".join(re.escape(k) + (r"(?![\w.])" if k.endswith("/") else r"(?!\w)")
                    for k in sorted(keys, key=len, reverse=True))
    return re.compile(rf"(?<![\w./-])(?:{alts})")


def text_files(tracked: list[str]) -> list[str]:
    out = []
    for p in tracked:
        if p in SELF or p.startswith(SELF_PREFIX):
            continue
        name = p.rsplit("/", 1)[-1]
        if name in TEXT_NAMES or Path(name).suffix in TEXT_SUFFIXES:
            out.append(p)
    return out


def line_offsets(text: str) -> list[int]:
    starts = [0]
    for line in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    return starts


def offset(text_lines: list[str], starts: list[int], lineno: int, col_bytes: int) -> int:
    line = text_lines[lineno - 1]
    return starts[lineno - 1] + len(line.encode()[:col_bytes].decode(errors="ignore"))


@dataclass
class FileEdits:
    spans: list[tuple[int, int, str]] = field(default_factory=list)  # protected replacements
    renames: dict[str, str] = field(default_factory=dict)  # local name -> new local name (modules)
    classes: dict[str, str] = field(default_factory=dict)  # class name -> new class name


def absolute(node: ast.ImportFrom, module: str, is_pkg: bool) -> str:
    """The absolute module of a relative import in `module` (a package when `is_pkg`)."""
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_edits(path: str, text: str, plan: Plan, known: set[str]) -> FileEdits:
    """Rewrite `from P import mod` (and relative imports); find renamed classes brought in by name."""
    edits = FileEdits()
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return edits
    lines = text.splitlines(keepends=True)
    starts = line_offsets(text)
    this = module_of(path)
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        src = node.module or ""
        if node.level:
            if this is None:
                continue
            src = absolute(node, this, path.endswith("__init__.py"))
        _note_class_renames(src, node, edits)
        groups = _regroup(plan, known, src, node)
        if groups is None and not node.level:
            continue
        groups = groups or {map_module(plan.modules, src): [_alias(a) for a in node.names]}
        for alias in node.names:
            full = f"{src}.{alias.name}"
            if full in known and alias.asname is None:
                leaf = map_module(plan.modules, full).rsplit(".", 1)[-1]
                if leaf != alias.name:
                    edits.renames[alias.name] = leaf
        indent = " " * node.col_offset
        stmts = [_from_stmt(mod, names, indent) for mod, names in groups.items()]
        start = offset(lines, starts, node.lineno, node.col_offset)
        end = offset(lines, starts, node.end_lineno or node.lineno, node.end_col_offset or 0)
        edits.spans.append((start, end, ("\n" + indent).join(stmts)))
    if edits.renames:
        _name_edits(tree, lines, starts, edits)
    return edits


def _from_stmt(module: str, names: list[str], indent: str) -> str:
    one = f"from {module} import {', '.join(names)}"
    if len(indent) + len(one) <= 120:
        return one
    return f"from {module} import (\n" + "".join(f"{indent}    {n},\n" for n in names) + f"{indent})"


def _alias(a: ast.alias) -> str:
    return a.name if a.asname is None else f"{a.name} as {a.asname}"


def _regroup(plan: Plan, known: set[str], src: str, node: ast.ImportFrom) -> dict[str, list[str]] | None:
    """New `from` statements when some imported names are moved modules; None when none are."""
    if not any(f"{src}.{a.name}" in known and map_module(plan.modules, f"{src}.{a.name}") != f"{src}.{a.name}"
               for a in node.names):
        return None
    groups: dict[str, list[str]] = {}
    for a in node.names:
        full = f"{src}.{a.name}"
        if full in known:
            parent, leaf = map_module(plan.modules, full).rsplit(".", 1)
            name = leaf if a.asname is None else f"{leaf} as {a.asname}"
        else:
            parent, name = map_module(plan.modules, src), _alias(a)
        groups.setdefault(parent, []).append(name)
    return groups


def _note_class_renames(src: str, node: ast.ImportFrom, edits: FileEdits) -> None:
    src = REEXPORTS.get(src, src)
    for mod, cls, new_cls in RENAMES:
        if src == mod and any(a.name == cls for a in node.names):
            if edits.classes.get(cls, new_cls) != new_cls:
                fail(f"a module imports both `{cls}` classes; rename one by hand first ({mod})")
            edits.classes[cls] = new_cls


def _name_edits(tree: ast.AST, lines: list[str], starts: list[int], edits: FileEdits) -> None:
    """Uses of a module whose name changed (`tarindex.scan` -> `shard_scan.scan`)."""
    taken = [(s, e) for s, e, _ in edits.spans]
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in edits.renames:
            s = offset(lines, starts, node.lineno, node.col_offset)
            if not any(a <= s < b for a, b in taken):
                edits.spans.append((s, s + len(node.id), edits.renames[node.id]))


def rewrite_text(text: str, edits: FileEdits, pattern: re.Pattern[str], table: dict[str, str]) -> str:
    out, pos = [], 0
    for start, end, repl in sorted(edits.spans):
        if start < pos:
            fail(f"overlapping edits at offset {start}")
        out.append(pattern.sub(lambda m: table[m.group(0)], text[pos:start]))
        out.append(repl)
        pos = end
    out.append(pattern.sub(lambda m: table[m.group(0)], text[pos:]))
    result = "".join(out)
    for cls, new_cls in edits.classes.items():
        result = re.sub(rf"\b{cls}\b", new_cls, result)
    return LONG_IMPORT.sub(_wrap_import, result)


# a one-line `from X import a, b` that the longer module path pushed past the 120-column limit
LONG_IMPORT = re.compile(r"(?m)^([ \t]*)from ([\w.]+) import ([\w ,]+?)[ \t]*$")


def _wrap_import(m: re.Match[str]) -> str:
    if len(m.group(0)) <= 120:
        return m.group(0)
    names = [n.strip() for n in m.group(3).split(",") if n.strip()]
    return _from_stmt(m.group(2), names, m.group(1)) if len(names) > 1 else m.group(0)


# a package-data anchor: `resources.files("pkg")`, `files("pkg")`, `pkgutil.get_data("pkg", ...)`
RESOURCE_ANCHOR = re.compile(r"""(\b(?:files|get_data)\(\s*)(["'])([\w.]+)\2""")


def move_resource_anchors(text: str, old: str, new: str) -> str:
    """A moved module that reads data next to itself names its package: follow the move.

    Only the module's own old package is rewritten (the data files moved with their module), so
    `files("cotrain_converters")` in `converters/oxe_table.py` becomes `files("cotrain_converters.rlds")`.
    """
    old_pkg, new_pkg = (module_of(old) or "").rpartition(".")[0], (module_of(new) or "").rpartition(".")[0]
    if not old_pkg or old_pkg == new_pkg or old.endswith("__init__.py"):
        return text
    return RESOURCE_ANCHOR.sub(lambda m: m.group(1) + m.group(2) + (new_pkg if m.group(3) == old_pkg else m.group(3))
                               + m.group(2), text)


def defining_renames(old_path: str) -> dict[str, str]:
    mod = module_of(old_path)
    return {cls: new for m, cls, new in RENAMES if m == mod}


# ---------------------------------------------------------------- pyproject and new files


def rewrite_pyproject(text: str) -> str:
    text, n = re.subn(r'(?ms)^package-dir\s*=\s*\{[^}]*\}\s*\n', "", text)
    text, m = re.subn(r'(?ms)^packages\s*=\s*\[.*?\]\s*\n', "", text)
    if not (n and m):
        fail("pyproject.toml: expected `package-dir = {...}` and `packages = [...]` under [tool.setuptools]")
    text = re.sub(r"(?m)^\[tool\.setuptools\]\s*\n(?=\s*\[|\Z)", "", text)
    find = ('[tool.setuptools.packages.find]\n'
            '# the folders are the import names; tests/, benchmarks/ and tools/ are not shipped\n'
            'include = ["cotrain", "cotrain.*", "cotrain_converters", "cotrain_converters.*"]\n\n')
    old_data = r"(?m)^\[tool\.setuptools\.package-data\][ \t]*\n(?:cotrain_converters\s*=\s*\[[^\]]*\][ \t]*\n)?"
    text, k = re.subn(old_data,
                      find + '[tool.setuptools.package-data]\n"*" = ["*.yaml", "py.typed"]\n', text)
    if not k:
        fail("pyproject.toml: expected a [tool.setuptools.package-data] table")
    # the regex pass already turned the old comment's `converters/` into `cotrain_converters/`
    text = text.replace("package (source folder `cotrain_converters/`), so no generic",
                        "package (one sub-package per family), so no generic")
    tomllib.loads(text)  # refuse to leave a broken pyproject behind
    return text


NEW_FILES: dict[str, str] = {
    "cotrain/py.typed": "",
    "cotrain_converters/py.typed": "",
    "cotrain/media/__init__.py": (
        '"""Media codecs: JPEG images and video frames, shared by converters, the loader and the simulator."""\n'),
    "cotrain/dataset/__init__.py": (
        '"""The on-disk dataset contract: what a converted dataset is and how to read and check it.\n\n'
        "Sample keys and modalities, `manifest.json`, the deterministic shard writer and reader, the member\n"
        "index (tar scan and `.idx.json` sidecar), exact norm stats, storage (local or fsspec URL), and the\n"
        "back ends of `validate`, `inspect` (summary) and `preview`. Imports only the foundations and media.\n"
        '"""\n'),
    "cotrain/annotate/__init__.py": (
        '"""Dense per-frame language for robot datasets: segment files and trajectory primitives."""\n'),
    "cotrain/eval/__init__.py": (
        '"""Run directory to predictions: the inference `Policy` and offline evaluation on held-out data."""\n'),
    "cotrain/lab/__init__.py": (
        '"""The lab: the tabletop simulator, the ablation runner and the demo.\n\n'
        "Built on the library and never imported by it (tests/test_architecture.py checks the direction).\n"
        '"""\n'),
    "cotrain/lab/demo/__init__.py": '"""The end-to-end demo behind `make demo` (`python -m cotrain.lab.demo`)."""\n',
    "cotrain/lab/demo/__main__.py": (
        '"""`python -m cotrain.lab.demo`: run the demo (cotrain/lab/demo/run.py)."""\n\n'
        "from cotrain.lab.demo.run import main\n\nmain()\n"),
    "cotrain_converters/rlds/__init__.py": (
        '"""RLDS / Open X-Embodiment TFRecords: the `rlds` converter and its TFRecord readers."""\n'),
    "cotrain_converters/mcap/__init__.py": (
        '"""MCAP robot logs (ROS 2, protobuf, JSON): the `mcap` converter, topic maps and decoding."""\n'),
    "cotrain_converters/lerobot/__init__.py": (
        '"""LeRobot datasets (v2.1 and v3.0): the `lerobot` converter and its metadata reader."""\n'),
    "cotrain_converters/hdf5/__init__.py": (
        '"""HDF5 robot sources: the `robomimic` and `aloha` converters and opening HDF5 files."""\n'),
    "cotrain_converters/vision_language/__init__.py": (
        '"""Vision-language sources: the `coco`, `img2dataset` and `hf-parquet` converters."""\n'),
    "cotrain_converters/human_video/__init__.py": (
        '"""Human video: the `egodex` and `video-keypoints` converters, hand poses and captions."""\n'),
}


def write_templates(root: Path) -> None:
    (root / "tests/test_architecture.py").write_text((TEMPLATES / "test_architecture.py").read_text())
    readme = root / "README.md"
    layout = (TEMPLATES / "readme_layout.md").read_text()
    text, n = re.subn(r"(?ms)^## Layout\n.*?(?=^## )", layout + "\n", readme.read_text())
    if n != 1:
        print("restructure: WARNING README.md has no '## Layout' section; add tools/restructure_templates/"
              "readme_layout.md by hand", file=sys.stderr)
    readme.write_text(text)
    packaging = root / "tests/test_packaging.py"
    if replace_function(packaging, "test_every_subpackage_is_listed_in_pyproject",
                        (TEMPLATES / "packaging_test.py").read_text()):
        text = packaging.read_text()
        if "from fnmatch import fnmatch" not in text:
            text = text.replace("from pathlib import", "from fnmatch import fnmatch\nfrom pathlib import", 1)
            packaging.write_text(text)


def replace_function(path: Path, name: str, new_source: str) -> bool:
    text = path.read_text()
    found = [n for n in ast.parse(text).body if isinstance(n, ast.FunctionDef) and n.name == name]
    if not found:
        print(f"restructure: WARNING {path}: no function {name}; add the packaging test by hand", file=sys.stderr)
        return False
    lines = text.splitlines(keepends=True)
    node = found[0]
    first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
    path.write_text("".join(lines[: first - 1]) + new_source + "".join(lines[node.end_lineno:]))
    return True


# ---------------------------------------------------------------- main


def print_plan(plan: Plan) -> None:
    print("# file moves")
    for old, new in sorted(plan.moves.items()):
        print(f"{old} -> {new}")
    print("# module rewrites (a key also rewrites its dotted suffixes)")
    for old, new in sorted(plan.modules.items()):
        print(f"{old} -> {new}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="print the mapping and change nothing")
    args = parser.parse_args()
    root = Path.cwd()
    if not (root / "pyproject.toml").is_file() or not (root / "cotrain").is_dir():
        fail("run this from the repository root (pyproject.toml and cotrain/ not found here)")
    tracked = git("ls-files").splitlines()
    plan = build_plan(tracked)
    if args.dry_run:
        print_plan(plan)
        return
    check_tree(tracked, plan)
    known = {m for p in tracked if (m := module_of(p))} | {m for k in MOVES if (m := module_of(k))}
    table = {**plan.modules, **plan.paths, **EXTRA_TEXT}
    pattern = key_regex(list(table))
    contents: dict[str, str] = {}
    for path in text_files(tracked):
        text = (root / path).read_text(encoding="utf-8")
        edits = import_edits(path, text, plan, known) if path.endswith(".py") else FileEdits()
        edits.classes.update(defining_renames(path))
        new = rewrite_text(text, edits, pattern, table)
        if path in plan.moves and path.endswith(".py"):
            new = move_resource_anchors(new, path, plan.moves[path])
        if new != text:
            contents[path] = new
    for old, new in plan.moves.items():
        (root / new).parent.mkdir(parents=True, exist_ok=True)
        git("mv", old, new)
    for old, text in contents.items():
        (root / plan.moves.get(old, old)).write_text(text, encoding="utf-8")
    (root / "pyproject.toml").write_text(rewrite_pyproject((root / "pyproject.toml").read_text()))
    for path, body in NEW_FILES.items():
        target = root / path
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(body)
    write_templates(root)
    git("add", "-u")
    git("add", "--", *NEW_FILES, "tests/test_architecture.py")
    remove_bytecode_dirs(root, [k.removesuffix("/") for k in MOVES if k.endswith("/")])
    # a one-shot tool: its templates now live in the tree, and the script stays in the history
    own = [p for p in tracked if p in SELF or p.startswith(SELF_PREFIX)]
    if own:
        git("rm", "-r", "-q", "--", *own)
    print(f"restructure: moved {len(plan.moves)} files, rewrote {len(contents)} files, removed itself; staged. "
          "Review, then commit.")


def remove_bytecode_dirs(root: Path, folders: list[str]) -> None:
    """A moved folder left behind with only __pycache__ in it would still import as a namespace package."""
    for folder in folders:
        here = root / folder
        if not here.is_dir():
            continue
        rest = [p for p in here.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        if rest:
            print(f"restructure: note: {folder}/ still holds untracked files: {[str(p) for p in rest[:5]]}",
                  file=sys.stderr)
            continue
        for p in sorted(here.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
        here.rmdir()


if __name__ == "__main__":
    main()
