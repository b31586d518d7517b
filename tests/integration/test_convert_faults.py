"""Conversion folders under faults: a full disk, a run killed before its cleanup, a parent killed under its workers."""

from __future__ import annotations

import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cotrain.convert import finalize as finalize_module
from cotrain.convert.pipeline import convert
from cotrain.convert.spec import RobotOptions
from tests.fixtures.aloha import write_aloha
from tests.helpers import ROOT, run_cli, tree_digest


def opts() -> RobotOptions:
    return RobotOptions(embodiment="aloha", shard_size=30)


def cli_args(src: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cotrain", "convert", "aloha", str(src), str(out), "--embodiment", "aloha",
            "--shard-size", "30", *extra]


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_aloha(tmp_path_factory.mktemp("aloha") / "raw", episodes=5, frames=16)


@pytest.fixture(scope="module")
def reference(src: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("ref") / "o"
    convert("aloha", src, out, opts())
    return tree_digest(out)


def run_limited(args: list[str], max_file_bytes: int) -> subprocess.CompletedProcess[str]:
    """Run with RLIMIT_FSIZE: every write past `max_file_bytes` in one file fails (EFBIG), as on a full disk."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120, preexec_fn=limit)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_full_disk_is_one_line_and_the_rerun_is_byte_identical(src: Path, reference: dict[str, str], tmp_path: Path,
                                                               workers: str) -> None:
    out = tmp_path / "o"
    # 60 kB: below every unit tar (~100 kB), so the first write past it fails inside a unit task
    # (in a worker process with --workers 2) and nothing of the conversion completes.
    proc = run_limited(cli_args(src, out, "--workers", workers), 60_000)
    assert proc.returncode == 1, proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith(f"error: cannot write {out}/") and "(EFBIG)" in line and "run the same command again" in line
    assert not (out / "manifest.json").exists() and not list(out.rglob("*.tmp"))  # nothing half-written
    run_cli(*cli_args(src, out)[3:], check=True)
    assert tree_digest(out) == reference


def test_full_disk_while_assembling_keeps_finished_units(src: Path, reference: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "o"
    proc = run_limited(cli_args(src, out), 200_000)  # unit tars fit, the first ~300 kB shard does not
    assert proc.returncode == 1 and "shard-000000.tar: the file exceeds" in proc.stderr, proc.stderr
    assert list(out.glob(".cotrain-work/units/*.json")), "finished units are kept for the re-run"
    assert not list(out.rglob("*.tmp")) and not (out / "shard-000000.tar").exists()
    run_cli(*cli_args(src, out)[3:], check=True)
    assert tree_digest(out) == reference


def test_killed_before_removing_the_work_folder_rerun_finishes_cleanup(src: Path, reference: dict[str, str],
                                                                     tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "o"

    def killed(path: object) -> None:  # the process dies right after the manifest is in place
        raise SystemExit(137)

    monkeypatch.setattr(finalize_module.shutil, "rmtree", killed)
    with pytest.raises(SystemExit):
        convert("aloha", src, out, opts())
    monkeypatch.undo()
    (out / "manifest.json.tmp").write_text("{")  # and a stray temp file from an earlier kill
    assert (out / "manifest.json").is_file() and (out / ".cotrain-work").is_dir()
    proc = run_cli(*cli_args(src, out)[3:], "--json", check=True)
    assert '"already_done": true' in proc.stdout
    assert tree_digest(out) == reference  # the work folder and the temp file are gone


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
def test_workers_die_with_a_killed_parent(tmp_path: Path) -> None:
    src = write_aloha(tmp_path / "big", episodes=8, frames=40, size=(96, 128))
    out = tmp_path / "o"
    proc = subprocess.Popen(cli_args(src, out, "--workers", "2"), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline and not list(out.glob(".cotrain-work/units/*")):
        time.sleep(0.005)
    children = _children(proc.pid)  # both workers and multiprocessing's resource tracker
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(children) >= 3, "the kill came too late: the workers had not started"
    deadline = time.monotonic() + 15
    while any(_running(c) for c in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = [c for c in children if _running(c)]
    for pid in alive:  # do not leak them into the rest of the test session
        subprocess.run(["kill", "-9", str(pid)], check=False)
    assert not alive, f"processes outlived their parent: {alive}"
    run_cli(*cli_args(src, out)[3:], check=True)  # and the folder they left resumes
    assert (out / "manifest.json").is_file() and not (out / ".cotrain-work").exists()
    shutil.rmtree(out)
