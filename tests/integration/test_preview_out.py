"""`cotrain preview --out`: a missing folder is created; a folder or a path through a file is one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.cotrain_data import write_dataset
from tests.helpers import run_cli


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("preview") / "ds", samples=6, per_shard=3)


def test_out_in_missing_folders_is_created(dataset: Path, tmp_path: Path) -> None:
    png = tmp_path / "new" / "deeper" / "p.png"
    proc = run_cli("preview", str(dataset), "--out", str(png), "--samples", "2", check=True)
    assert proc.stdout.startswith(f"wrote {png} ") and png.read_bytes().startswith(b"\x89PNG")
    assert not list(png.parent.glob("*.tmp"))


@pytest.mark.parametrize("where", ["folder", "through-a-file"])
def test_out_that_cannot_be_a_file_is_one_line(dataset: Path, tmp_path: Path, where: str) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    out = tmp_path if where == "folder" else tmp_path / "notes.txt" / "p.png"
    proc = run_cli("preview", str(dataset), "--out", str(out))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --out {out}")
    assert ("is a folder" if where == "folder" else "notes.txt is a file, not a folder") in lines[0]
    assert (
        sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"] and (tmp_path / "notes.txt").read_text() == "mine"
    )
