#!/usr/bin/env python3
"""Split tests/ into unit tests that mirror the package and integration tests (issue 19), with `git mv`.

Run once from the repository root of a clean checkout (stdlib only):

    python3 tools/split_tests.py --dry-run                  # print the plan, change nothing
    python3 tools/split_tests.py                            # move, rewrite references, stage
    python3 tools/split_tests.py --collect .venv/bin/python # the same, and compare pytest's collection
                                                            # before and after (exit 1 if it differs)

Layout after the run:

    tests/conftest.py, tests/helpers.py, tests/fixtures/   stay (shared by both halves)
    tests/unit/<package path>/test_*.py                    one folder per package: dataset/, mix/,
                                                           model/, train/, convert/, annotate/,
                                                           action_tokens/, lab/sim/, lab/ablate/,
                                                           converters/<family>/ (cotrain_converters)
    tests/integration/                                     CLI runs end to end, faults under real
                                                           processes, fuzz/, LeRobot/openpi
                                                           compatibility (lerobot_compat/), serve,
                                                           object storage against a server, demo,
                                                           benchmark smoke runs

Each file's place was decided by reading it (PLACES, with the reason where a file mixes both kinds);
a test file that PLACES does not name (added after this script was written) goes to
`tests/unit/<package it imports most>/`, shown as "inferred" in the plan; with no cotrain import
to go by the run stops and asks for a line in PLACES.

References are rewritten in every tracked text file (one pass per file, longest key first):
slashed paths (`tests/test_mix.py`, `tests/fuzz/`), quoted path segments (`ROOT / "tests" /
"dist_mix_worker.py"`), dotted modules (`from tests.test_model import SIZES`), and in moved files
each `Path(__file__)...parent`/`parents[N]` anchor is re-aimed at the folder it pointed to before
(`ROOT = Path(__file__).resolve().parents[1]` in tests/ becomes `parents[3]` in tests/unit/dataset/).

It refuses to run twice (tests/unit/ or tests/integration/ exists), on a dirty tree, or when two
test files would end with one basename (pytest's default import mode needs them unique); everything
is checked before anything moves. It stages its own removal: it runs once.
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import NoReturn

SELF = "tools/split_tests.py"
UNIT, INTEG = "tests/unit/", "tests/integration/"

# old path -> new path; a key ending in "/" moves a folder with everything in it.
PLACES: dict[str, str] = {
    # foundations and packaging: the top of tests/unit/
    "tests/test_architecture.py": UNIT + "test_architecture.py",
    "tests/test_atomic.py": UNIT + "test_atomic.py",
    "tests/test_packaging.py": UNIT + "test_packaging.py",  # one `--help` subprocess: an import check
    # the dataset contract
    "tests/test_inspect.py": UNIT + "dataset/test_inspect.py",  # 2 of 33 run the CLI's exit codes
    "tests/test_tarindex.py": UNIT + "dataset/test_shard_scan.py",  # tarindex.py is now dataset/shard_scan.py
    "tests/test_wds.py": UNIT + "dataset/test_wds.py",  # 1 of 14 (slow) reads through a local S3 server
    # the layers above it
    "tests/test_pipeline.py": UNIT + "convert/test_pipeline.py",  # 5 of 19 run the CLI or kill a run
    "tests/test_annotate.py": UNIT + "annotate/test_annotate.py",  # 3 of 22 through the CLI
    "tests/test_mix.py": UNIT + "mix/test_mix.py",  # 1 of 26 under torchrun, 1 through the CLI
    "tests/dist_mix_worker.py": UNIT + "mix/dist_mix_worker.py",  # test_mix's torchrun worker
    "tests/test_tokenizer.py": UNIT + "action_tokens/test_tokenizer.py",
    "tests/test_model.py": UNIT + "model/test_model.py",
    "tests/test_vision_stem.py": UNIT + "model/test_vision_stem.py",
    "tests/test_train.py": UNIT + "train/test_train.py",  # 4 of 12 use the CLI, kill a run or torchrun
    "tests/test_watch.py": UNIT + "train/test_watch.py",  # 1 of 7 on two processes
    "tests/test_sim.py": UNIT + "lab/sim/test_sim.py",
    "tests/test_ablate.py": UNIT + "lab/ablate/test_ablate.py",  # statistics; 1 tiny study end to end
    # converters, by family (cotrain_converters/<family>/)
    "tests/test_aloha.py": UNIT + "converters/hdf5/test_aloha.py",
    "tests/test_robomimic.py": UNIT + "converters/hdf5/test_robomimic.py",
    "tests/test_human_video.py": UNIT + "converters/human_video/test_human_video.py",
    "tests/test_lerobot.py": UNIT + "converters/lerobot/test_lerobot.py",
    "tests/test_mcap.py": UNIT + "converters/mcap/test_mcap.py",
    "tests/test_rlds.py": UNIT + "converters/rlds/test_rlds.py",
    "tests/test_vl_converters.py": UNIT + "converters/vision_language/test_vl_converters.py",
    "tests/test_lbm.py": UNIT + "converters/test_lbm.py",
    # integration: whole programs, processes, servers, other projects' code
    "tests/test_convert_faults.py": INTEG + "test_convert_faults.py",
    "tests/test_train_faults.py": INTEG + "test_train_faults.py",
    "tests/test_preview_out.py": INTEG + "test_preview_out.py",
    "tests/test_demo.py": INTEG + "test_demo.py",
    "tests/test_benchmarks.py": INTEG + "test_benchmarks.py",
    "tests/test_storage.py": INTEG + "test_storage.py",
    "tests/test_serve.py": INTEG + "test_serve.py",
    "tests/test_lerobot_interop.py": INTEG + "test_lerobot_interop.py",
    "tests/test_pi_compat.py": INTEG + "test_pi_compat.py",
    "tests/fuzz/": INTEG + "fuzz/",
    "tests/lerobot_compat/": INTEG + "lerobot_compat/",
}
STAY = ("tests/conftest.py", "tests/helpers.py", "tests/fixtures/", "tests/__init__.py")
DONE_MARKERS = ("tests/unit", "tests/integration")
TEXT_SUFFIXES = {".py", ".md", ".toml", ".yaml", ".yml", ".cfg", ".ini", ".txt", ".sh", ".rst"}
TEXT_NAMES = {"Makefile", "run"}
ANCHOR = re.compile(r"Path\(__file__\)(\.resolve\(\))?(?:\.parents\[(\d+)\]|((?:\.parent)+)(?![\w\[]))")


def fail(msg: str) -> NoReturn:
    print(f"split_tests: {msg}", file=sys.stderr)
    raise SystemExit(1)


def git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


# ---------------------------------------------------------------- the plan


def infer_place(path: str, source: str) -> str | None:
    """tests/unit/<the package the file imports most>/NAME for a test file PLACES does not name."""
    found: Counter[str] = Counter()
    for node in ast.walk(ast.parse(source, path)):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
        for name in names:
            parts = name.split(".")
            if parts[0] == "cotrain" and len(parts) > 2:  # cotrain.errors etc. say nothing of the layer
                found["/".join(parts[1:3] if parts[1] == "lab" and len(parts) > 3 else parts[1:2])] += 1
            elif parts[0] == "cotrain_converters" and len(parts) > 2:
                found["converters/" + parts[1]] += 1
            elif parts[0] == "cotrain_converters" and len(parts) == 2:
                found["converters"] += 1
    if not found:
        return None
    return UNIT + found.most_common(1)[0][0] + "/" + path.rsplit("/", 1)[-1]


def build_plan(tracked: list[str], root: Path) -> tuple[dict[str, str], list[str], list[str]]:
    """(old -> new for every tracked file that moves, inferred files, notes)."""
    moves: dict[str, str] = {}
    inferred: list[str] = []
    notes = [f"{k} is named in PLACES but not in the tree; nothing to move" for k in PLACES
             if not any(p == k or (k.endswith("/") and p.startswith(k)) for p in tracked)]
    for path in tracked:
        if not path.startswith("tests/") or path in STAY or path.startswith(tuple(s for s in STAY if s.endswith("/"))):
            continue
        folder = next((k for k in PLACES if k.endswith("/") and path.startswith(k)), None)
        if path in PLACES:
            moves[path] = PLACES[path]
        elif folder:
            moves[path] = PLACES[folder] + path[len(folder):]
        elif path.count("/") == 1 and re.fullmatch(r"test_\w+\.py", path[6:]):
            place = infer_place(path, (root / path).read_text(encoding="utf-8"))
            if place is None:
                fail(f"{path}: imports no cotrain package to place it by; add it to PLACES in {SELF}")
            moves[path] = place
            inferred.append(path)
        else:
            notes.append(f"{path} is not in PLACES and not a test module; it stays where it is")
    return moves, inferred, notes


def check_tree(tracked: list[str], moves: dict[str, str], root: Path) -> None:
    """Everything that must hold before the first `git mv`."""
    done = [m for m in DONE_MARKERS if (root / m).exists()]
    if done:
        fail(f"the tests are already split ({', '.join(done)} exists); run this on a tree that is not")
    targets = list(moves.values())
    clash = sorted({t for t in targets if targets.count(t) > 1} | {t for t in targets if t in set(tracked)})
    if clash:
        fail("target paths already exist or are targeted twice: " + ", ".join(clash))
    after = [moves.get(p, p) for p in tracked if p.startswith("tests/")]
    base = Counter(p.rsplit("/", 1)[-1] for p in after if re.fullmatch(r"test_\w+\.py", p.rsplit("/", 1)[-1]))
    twice = sorted(b for b, n in base.items() if n > 1)
    if twice:
        fail("these test basenames would occur twice (pytest imports test modules by basename): " + ", ".join(twice))
    if git("status", "--porcelain", "--untracked-files=no").strip():
        fail("the working tree has uncommitted changes; commit or stash them first")


# ---------------------------------------------------------------- rewriting


def path_table(moves: dict[str, str]) -> dict[str, str]:
    """Slashed keys: each moved file, and each moved folder without its trailing slash."""
    table = {old: new for old, new in moves.items()}
    table.update({k.rstrip("/"): v.rstrip("/") for k, v in PLACES.items() if k.endswith("/")})
    return table


def module_table(table: dict[str, str]) -> dict[str, str]:
    """Dotted keys: `tests.test_model` -> `tests.unit.model.test_model`, `tests.fuzz` -> ... ."""
    out = {}
    for old, new in table.items():
        if old.endswith(".py") or "." not in old.rsplit("/", 1)[-1]:
            out[old.removesuffix(".py").replace("/", ".")] = new.removesuffix(".py").replace("/", ".")
    return out


def key_regex(keys: list[str], sep: str) -> re.Pattern[str]:
    """One alternation, longest first; a key never matches inside a longer name (`tests/test_mix.py`
    not in `tests/test_mixer.py`, `tests/fuzz` not in `tests/fuzz.md`); a folder key matches the
    folder's part of every path below it (`tests/fuzz` of `tests/fuzz/test_x.py`)."""
    alts = "|".join(re.escape(k) for k in sorted(keys, key=len, reverse=True))
    if sep == ".":
        return re.compile(rf"(?<![\w.])(?:{alts})(?!\w)")
    return re.compile(rf"(?<![\w./-])(?:{alts})(?![\w-]|\.\w)")


SEGMENTS = re.compile(r"""(?P<q>["'])tests(?P=q)(?:\s*/\s*(?P=q)[\w.-]+(?P=q))+""")


def map_path(path: str, table: dict[str, str]) -> str:
    if path in table:
        return table[path]
    folder = next((k for k in sorted(table, key=len, reverse=True) if path.startswith(k + "/")), None)
    return table[folder] + path[len(folder):] if folder else path


def rewrite_segments(text: str, table: dict[str, str]) -> str:
    """`"tests" / "lerobot_compat" / "x.py"` -> `"tests" / "integration" / "lerobot_compat" / "x.py"`."""
    def one(m: re.Match[str]) -> str:
        q = m.group("q")
        parts = re.findall(rf"{q}([\w.-]+){q}", m.group(0))
        new = map_path("/".join(parts), table)
        return m.group(0) if new == "/".join(parts) else " / ".join(f"{q}{p}{q}" for p in new.split("/"))
    return SEGMENTS.sub(one, text)


def reanchor(text: str, old: str, new: str) -> str:
    """Aim each `Path(__file__)` anchor of a moved file at the folder it named before (moved with it
    when that folder moved, e.g. a script's own folder)."""
    old_p, new_p = PurePosixPath(old), PurePosixPath(new)
    folders = {k.rstrip("/"): v.rstrip("/") for k, v in PLACES.items() if k.endswith("/")}

    def one(m: re.Match[str]) -> str:
        ups = int(m.group(2)) + 1 if m.group(2) is not None else m.group(3).count(".parent")
        target = str(old_p.parents[ups - 1])
        target = next((v + target[len(k):] for k, v in folders.items() if target == k or target.startswith(k + "/")),
                      target)
        up = [str(p) for p in new_p.parents].index(target) + 1 if target in [str(p) for p in new_p.parents] else None
        if up is None:
            fail(f"{old}: {m.group(0)} names {target}, which is not above {new}; fix it by hand")
        resolve = m.group(1) or ""
        tail = f".parents[{up - 1}]" if m.group(2) is not None else ".parent" * up
        return f"Path(__file__){resolve}{tail}"
    return ANCHOR.sub(one, text)


def text_files(tracked: list[str]) -> list[str]:
    return [p for p in tracked if p != SELF and (p.rsplit("/", 1)[-1] in TEXT_NAMES or Path(p).suffix in TEXT_SUFFIXES)]


def rewrite(text: str, slashed: re.Pattern[str], dotted: re.Pattern[str], table: dict[str, str],
            modules: dict[str, str]) -> str:
    text = rewrite_segments(text, table)
    text = slashed.sub(lambda m: map_path(m.group(0), table), text)
    return dotted.sub(lambda m: modules[m.group(0)], text)


# ---------------------------------------------------------------- running


def collected(python: str) -> int:
    """How many tests pytest collects (`-q -q --collect-only` prints `FILE: N` per file)."""
    proc = subprocess.run([python, "-m", "pytest", "--collect-only", "-q", "-q", "-p", "no:cacheprovider"],
                          capture_output=True, text=True)
    counts = re.findall(r"^\S+\.py: (\d+)$", proc.stdout, re.M)
    if proc.returncode not in (0, 5) or not counts:
        fail(f"pytest --collect-only failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return sum(map(int, counts))


def print_plan(moves: dict[str, str], inferred: list[str], notes: list[str]) -> None:
    for old, new in moves.items():
        print(f"{old:44s} -> {new}{'   (inferred from its imports)' if old in inferred else ''}")
    for note in notes:
        print(f"note: {note}")


def remove_empty_dirs(root: Path, folders: set[str]) -> None:
    """A moved folder left with only __pycache__ would still import as a namespace package."""
    for folder in sorted(folders, key=len, reverse=True):
        here = root / folder
        if here.is_dir() and all("__pycache__" in p.parts or p.is_dir() for p in here.rglob("*")):
            for p in sorted(here.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                p.unlink() if p.is_file() else p.rmdir()
            here.rmdir()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    parser.add_argument("--collect", metavar="PYTHON", help="compare pytest's collection before and after")
    args = parser.parse_args()
    root = Path.cwd()
    if not (root / "pyproject.toml").is_file() or not (root / "tests").is_dir():
        fail("run this from the repository root (pyproject.toml and tests/ not found here)")
    tracked = git("ls-files").splitlines()
    moves, inferred, notes = build_plan(tracked, root)
    if args.dry_run:
        print_plan(moves, inferred, notes)
        return
    check_tree(tracked, moves, root)
    before = collected(args.collect) if args.collect else None
    table = path_table(moves)
    modules = module_table(table)
    slashed, dotted = key_regex(list(table), "/"), key_regex(list(modules), ".")
    contents: dict[str, str] = {}
    for path in text_files(tracked):
        try:
            text = (root / path).read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError):
            continue  # binary despite its suffix, or deleted in the working tree
        new = rewrite(text, slashed, dotted, table, modules)
        if path in moves and path.endswith(".py"):
            new = reanchor(new, path, moves[path])
        if new != text:
            contents[path] = new
    for old, new in moves.items():
        (root / new).parent.mkdir(parents=True, exist_ok=True)
        git("mv", old, new)
    for old, text in contents.items():
        (root / moves.get(old, old)).write_text(text, encoding="utf-8")
    git("add", "-u")
    remove_empty_dirs(root, {str(PurePosixPath(p).parent) for p in moves})
    if SELF in tracked:
        git("rm", "-q", "--", SELF)
    print_plan(moves, inferred, notes)
    print(f"split_tests: moved {len(moves)} files, rewrote {len(contents)} files, removed itself; staged. "
          "Review, then commit.")
    if before is not None:
        after = collected(args.collect)
        print(f"split_tests: pytest collects {before} tests before and {after} after")
        if after != before:
            fail("the collection changed; inspect the staged tree (`git reset --hard` undoes the run)")


if __name__ == "__main__":
    main()
