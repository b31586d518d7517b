"""Trainer output under faults: `--json` keeps stdout one JSON document; a full disk during a checkpoint write."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.fixtures.cotrain_data import write_dataset
from tests.helpers import ROOT, run_cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def mix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faultdata")
    write_dataset(root / "robot", samples=24, state_dim=4, action_dim=3, horizon=4, cameras=("front",))
    doc = {"name": "faults", "seed": 3, "batch_size": 4, "image_size": 32, "sources": {"robot": {"path": "robot"}},
           "phases": [{"name": "a", "steps": 100, "weights": {"robot": 1.0}}]}
    (root / "mix.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return root / "mix.yaml"


def train_args(mix: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return ["train", str(mix), "--steps", str(steps), "--out", str(out), "--save-every", "2", "--warmup-steps", "1",
            "--set", "tensorboard=false", *extra]


def test_json_stdout_is_exactly_one_document(mix: Path, tmp_path: Path) -> None:
    proc = run_cli(*train_args(mix, tmp_path / "run", 1), "--json", "--set", "progress=true", check=True)
    summary = json.loads(proc.stdout)  # the whole of stdout: the progress bar went to stderr
    assert summary["steps"] == "0 -> 1" and summary["checkpoint"].endswith("step_00000001")
    assert "1/1" in proc.stderr


@pytest.mark.slow
def test_full_disk_during_a_checkpoint_then_the_rerun_equals_a_run_with_room(mix: Path, tmp_path: Path) -> None:
    quiet = ("--set", "progress=false")
    run_cli(*train_args(mix, tmp_path / "whole", 2, *quiet), check=True)
    run = tmp_path / "run"

    def limit() -> None:  # the tiny model's ~0.8 MB weights no longer fit: the step-2 checkpoint fails
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    args = [sys.executable, "-m", "cotrain", *train_args(mix, run, 2, *quiet)]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300, preexec_fn=limit,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 1, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: cannot write {run}/checkpoints/.tmp_step_00000002/") and "(EFBIG)" in line
    assert "--resume" in line and "Traceback" not in proc.stderr
    assert list((run / "checkpoints").iterdir()) == []  # no partial checkpoint folder, no LATEST
    run_cli(*train_args(mix, run, 2, "--resume", *quiet), check=True)  # space freed: the same run again
    # The same weights as the run that had room (not the same file bytes: safetensors writes its
    # metadata in a Rust HashMap's order, which differs between processes).
    final = "checkpoints/step_00000002/model.safetensors"
    again, whole = load_file(str(run / final)), load_file(str(tmp_path / "whole" / final))
    assert again.keys() == whole.keys() and all(torch.equal(again[k], whole[k]) for k in whole)
