"""Helpers that test modules import: the repository root, the shared sample data, running the CLI,
comparing output folders, grouping samples by episode. (Fixtures live in conftest.py, which no test
imports: pytest loads it, and importing it again would make a second copy of its module.)"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def tree_digest(directory: Path) -> dict[str, str]:
    """sha256 of every file below `directory` by relative path (to compare two outputs byte for byte)."""
    return {
        p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def run_cli(*args: str, check: bool = False, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run `python -m cotrain ...` in a subprocess, as a user would."""
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "cotrain", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"cotrain {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def episodes_of(ds: Any) -> dict[str, list[dict[str, Any]]]:
    """Decoded samples of a converted dataset grouped by their source episode id, in file order."""
    by_episode: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for sample in ds.iter_decoded():
        by_episode[sample["meta.json"]["episode"]].append(sample)
    return dict(by_episode)


def find_lerobot_python() -> Path | None:
    """The LeRobot 0.4.4 environment's python for the equivalence tests: $COTRAIN_LEROBOT_PYTHON, else
    `.venv-lerobot` once `make lerobot-env` finished (its `.installed` stamp: a half-built environment,
    e.g. after a failed download, is treated as none), else None."""
    configured = os.environ.get("COTRAIN_LEROBOT_PYTHON")
    if configured:
        return Path(configured) if Path(configured).is_file() else None
    local = ROOT / ".venv-lerobot"
    return local / "bin" / "python" if (local / ".installed").is_file() else None


NO_LEROBOT = ("no LeRobot environment: build it with `make lerobot-env` (.venv-lerobot) or set "
              "COTRAIN_LEROBOT_PYTHON to a Python with lerobot==0.4.4")
