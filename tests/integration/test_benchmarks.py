"""Smoke tests of the benchmark scripts: both run end to end at a tiny size (`--quick`) and write the
documented JSON. Speed is never asserted here (it depends on the machine); only that every figure a
reader relies on is present, consistent and a positive number."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.slow  # each script starts a dozen fresh Python processes


def _run(script: str, out: Path, *args: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--out", str(out), *args],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"results: {out}" in proc.stdout
    return json.loads(out.read_text())


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _check_machine(doc: dict[str, Any], name: str) -> None:
    assert doc["benchmark"] == name and doc["size"] == "quick"
    machine = doc["machine"]
    assert machine["cpu_count"] >= 1 and machine["python"].count(".") == 2
    assert machine["packages"]["cotrain"] and machine["packages"]["numpy"]
    assert len(machine["load_average_start"]) == 3 and len(machine["load_average_end"]) == 3


def test_convert_bench_quick(tmp_path: Path) -> None:
    doc = _run("convert_bench.py", tmp_path / "convert.json")
    _check_machine(doc, "convert")
    # Every case whose converter is installed runs; the three are all in this repository.
    assert set(doc["cases"]) == {"lerobot", "mcap", "rlds"} and doc["cases_missing"] == {}
    for case, body in doc["cases"].items():
        s = body["summary"]
        for key in ("floor_fps", "convert_w1_fps", "floor_x2_fps", "convert_w2_fps", "ratio_w1", "scaling_w2",
                    "floor_scaling_x2", "ratio_w2_to_floor_x2", "cpu_ratio_w1", "cpu_ratio_w2"):
            assert _positive(s[key]), (case, key, s[key])
        assert s["ratio_w1"] == pytest.approx(s["convert_w1_fps"] / s["floor_fps"], rel=1e-3)
        assert s["scaling_w2"] == pytest.approx(s["convert_w2_fps"] / s["convert_w1_fps"], rel=1e-3)
        assert s["meets_ratio_w1"] == (s["ratio_w1"] >= 0.8) and s["target_ratio_w1"] == 0.8
        # The floor and the converter handled the same frames: episodes x frames x 2 cameras.
        frames = sum(12 + e for e in range(2)) * 2
        assert s["camera_frames"] == frames
        variants = {f"{case}-floor", f"{case}-convert-w1", f"{case}-floor-x2", f"{case}-convert-w2"}
        if case == "lerobot":  # the video case also runs floor and converter with FFmpeg's own threads
            variants |= {"lerobot-floor-ffmpeg-threads", "lerobot-convert-w1-ffmpeg-threads"}
            auto = s["ffmpeg_threads"]
            assert auto["ratio_w1"] == pytest.approx(auto["convert_w1_fps"] / auto["floor_fps"], rel=1e-3)
        assert set(body["runs"]) == variants
        for runs in body["runs"].values():
            assert len(runs) == 1 and runs[0]["frames"] == frames and _positive(runs[0]["peak_pss_bytes"])
        assert len(body["runs"][f"{case}-floor-x2"][0]["parts"]) == 2


def test_loader_bench_quick(tmp_path: Path) -> None:
    doc = _run("loader_bench.py", tmp_path / "loader.json")
    _check_machine(doc, "loader")
    table = doc["summary"]
    keys = {"floor", "floor-x2"} | {f"{k}-w{w}" for k in ("wds", "mixture", "randommix", "hf") for w in (0, 2)}
    assert set(table) == keys | {"interleaved-w0"}
    inter = table.pop("interleaved-w0")  # the floor and the loader alternating in one process
    assert _positive(inter["ratio_to_floor"]) and _positive(inter["cpu_ratio_to_floor"])
    assert _positive(inter["samples_per_s"]) and _positive(inter["floor_samples_per_s"])
    chunks = doc["runs"]["interleaved-w0"][0]["chunks"]
    assert len(chunks) == 8 and inter["ratio_to_floor"] == pytest.approx(
        float(np.median([c["floor_s"] / c["mixture_s"] for c in chunks])), abs=1e-4)
    for key, row in table.items():
        for field in ("samples_per_s", "ratio_to_floor", "paired_ratio_to_floor", "samples_per_cpu_s", "peak_pss_mib"):
            assert _positive(row[field]), (key, field, row[field])
    assert table["floor"]["ratio_to_floor"] == 1.0
    for key in ("mixture-w0", "mixture-w2", "randommix-w0", "randommix-w2", "hf-w0", "hf-w2"):
        row = table[key]
        assert 0 <= row["overall_error"] <= 1 and 0 <= row["worst_window_error"] <= 1
    # The mixture is exact per batch: over whole batches its realised shares hit the weights (+-1 sample).
    assert table["mixture-w0"]["overall_error"] <= 1 / 256
    long_run = doc["long_run"]
    assert (
        long_run["samples"] >= 2000 and _positive(long_run["pss_10pct_mib"]) and _positive(long_run["pss_100pct_mib"])
    )
    assert long_run["pss_growth"] == pytest.approx(
        (long_run["pss_100pct_mib"] - long_run["pss_10pct_mib"]) / long_run["pss_10pct_mib"], abs=2e-3)
    assert long_run["realised"] == pytest.approx([0.5, 0.3, 0.2], abs=1 / 2000)
    targets = doc["targets"]
    assert set(targets) == {"mixture_w0_ratio", "mixture_w0_interleaved_ratio", "mixture_w2_ratio",
                            "mixture_faster_than", "worst_window_error", "memory_growth"}
    assert all(isinstance(t["met"], bool) for t in targets.values())
    runs = doc["runs"]
    assert targets["mixture_w0_ratio"]["value"] == table["mixture-w0"]["paired_ratio_to_floor"] == pytest.approx(
        runs["mixture-w0"][0]["rate"] / runs["floor"][0]["rate"], abs=1e-4)  # one round: the pair's ratio
    assert list(runs)[:4] == ["floor", "mixture-w0", "floor-x2", "mixture-w2"]  # each floor just before its pair


def test_loader_bench_partial_baseline_run(tmp_path: Path) -> None:
    # --only one MixtureLoader variant with --baseline: the baseline repeats just that variant.
    doc = _run(
        "loader_bench.py", tmp_path / "loader.json", "--only", "mixture-w0", "--no-long", "--baseline", str(ROOT)
    )
    assert set(doc["summary"]) == {"floor", "floor-x2", "mixture-w0", "mixture-w0@baseline", "interleaved-w0",
                                   "interleaved-w0@baseline"}
    assert set(doc["baseline"]["interleaved_w0_ratio"]) == {"new", "baseline"}
    assert _positive(doc["baseline"]["mixture_w0_speedup"]) and "mixture_w2_speedup" not in doc["baseline"]


def test_tfrecord_crc_bench_quick(tmp_path: Path) -> None:
    doc = _run("tfrecord_crc_bench.py", tmp_path / "crc.json")
    _check_machine(doc, "tfrecord-crc")
    assert doc["google_crc32c_implementation"] == "c" and doc["records"] == 2 and doc["baseline_rev"] is None
    rates = doc["mb_per_s"]
    assert set(rates) == {"crc_google_crc32c", "crc_google_crc32c_python", "crc_zlib_crc32", "read_current"}
    assert all(_positive(v) for v in rates.values()), rates
    assert doc["ratios"]["google_crc32c_vs_zlib"] == pytest.approx(rates["crc_google_crc32c"] / rates["crc_zlib_crc32"],
                                                                   rel=1e-3)
    assert doc["ratios"]["read_current_vs_baseline"] is None


def test_grounding_probe_quick(tmp_path: Path) -> None:
    doc = _run("grounding_probe.py", tmp_path / "probe.json")
    _check_machine(doc, "grounding_probe")
    assert doc["settings"]["steps"] == 12 and doc["settings"]["readout"] == "flow"
    assert set(doc["tasks"]) == {"effector", "fixed", "colour", "instruction"}
    for task, body in doc["tasks"].items():
        assert _positive(body["mean_predictor_median_error_m"]), task
        for model in ("vla", "reference"):
            row = body[model]
            assert _positive(row["median_error_m"]) and 0 <= row["within_grasp_radius"] <= 1, (task, model)
            assert [c["step"] for c in row["curve"]] == [2, 4, 6, 8, 10, 12]
            assert row["median_error_m"] == row["curve"][-1]["median_error_m"]
    assert doc["tasks"]["colour"]["example_text"] in {"red", "green", "blue", "yellow"}
    assert doc["tasks"]["instruction"]["example_text"].split()[0] in {"pick", "push", "place"}


def test_sim_bc_reference_quick(tmp_path: Path) -> None:
    doc = _run("sim_bc_reference.py", tmp_path / "bc.json", "--threads", "1")
    _check_machine(doc, "sim_bc_reference")
    settings = doc["settings"]
    assert settings["data"] == "generated" and settings["verbs"] == "pick" and settings["steps"] == 6
    assert settings["samples"] > 4 and _positive(settings["parameters"])
    assert [row["step"] for row in doc["curve"]] == [3, 6]
    for row in doc["curve"]:
        assert _positive(row["loss_last_100"]) and row["train_seconds"] >= 0
        for split in ("seen", "train"):
            summary = row[split]
            assert summary["episodes"] == 2 and 0 <= summary["successes"] <= 2, (row["step"], split)
            assert _positive(summary["mean_closest"]) or summary["successes"] == 2


@pytest.mark.parametrize("task", ["fixed", "colour"])
def test_grounding_probe_targets_lie_on_what_the_text_names(task: str) -> None:
    # The probe is only meaningful if each target point is on the thing its text names: look there.
    from benchmarks.grounding_probe import make_data
    from cotrain.lab.sim.scene import COLOURS

    images, texts, targets = make_data(task, "test", 24, 64)
    for image, text, target in zip(images, texts, targets):
        x, y = ((target + 1) / 2 * 64).astype(int)
        window = image[max(y - 3, 0): y + 4, max(x - 3, 0): x + 4].reshape(-1, 3).astype(float)
        distance = np.linalg.norm(window - np.array(COLOURS[text], float), axis=1).min()
        others = [np.linalg.norm(window - np.array(rgb, float), axis=1).min() for name, rgb in COLOURS.items()
                  if name != text]
        assert distance < 40 and distance < min(others), (text, target, distance)
