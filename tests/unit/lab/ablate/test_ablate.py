"""The ablation runner: statistics against known values, mixture rescaling, a tiny end-to-end study, resume."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from cotrain.dataset.sequential import Dataset
from cotrain.errors import ConfigError
from cotrain.lab.ablate.runner import EVALUATION_VERSION
from cotrain.lab.ablate.significance import compact_letter_display, holm, pairwise_welch, summarise, welch_t_test
from cotrain.lab.ablate.study import rescale_phases
from cotrain.lab.sim.evaluate import EvalConfig, evaluate_policy, expert_policy, tracking_slope
from tests.helpers import ROOT, episodes_of

# --- Welch p-values against closed forms and tables -------------------------------------------------


def _equal_variance_pair(n: int, t: float) -> tuple[list[float], list[float]]:
    """Two groups of n values with equal sample variance, so Welch's df is 2(n - 1), and Welch t = t."""
    base = [float(i) for i in range(n)]
    se = math.sqrt(2 * (n * (n + 1) / 12) / n)  # var(0..n-1, ddof=1) = n(n+1)/12
    return [v + t * se for v in base], base


@pytest.mark.parametrize("t", [-7.0, -1.3, 0.4, 2.0, 12.706])
def test_welch_p_matches_student_t_closed_forms(t: float) -> None:
    r2 = welch_t_test(*_equal_variance_pair(2, t))  # df 2: P(|T| > t) = 1 - t / sqrt(2 + t^2)
    assert (r2.t, r2.df) == (pytest.approx(t, rel=1e-12), pytest.approx(2.0, rel=1e-12))
    assert r2.p == pytest.approx(1 - abs(t) / math.sqrt(2 + t * t), rel=1e-10)
    r4 = welch_t_test(*_equal_variance_pair(3, t))  # df 4: F(t) = 1/2 + 3/8 * t/sqrt(u) * (1 - t^2/(12u))
    u = 1 + t * t / 4
    assert r4.df == pytest.approx(4.0, rel=1e-12)
    assert r4.p == pytest.approx(1 - 0.75 * abs(t) / math.sqrt(u) * (1 - t * t / (12 * u)), rel=1e-10)


def test_welch_p_at_table_critical_values() -> None:
    # Two-sided 5 % critical values of Student's t (any statistics table), df = 2(n - 1).
    for n, crit in ((2, 4.303), (3, 2.776), (6, 2.228), (16, 2.042)):
        assert welch_t_test(*_equal_variance_pair(n, crit)).p == pytest.approx(0.05, abs=2e-4)
    assert welch_t_test(*_equal_variance_pair(4, 0.0)).p == 1.0


# --- Welch, Holm, letters ---------------------------------------------------------------------------

# Wikipedia "Welch's t-test", example 1 (unequal variances, equal sizes): t = -2.46, df = 25.0, p = 0.021.
_A1 = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
_A2 = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]


def test_welch_matches_the_published_example_and_the_formula() -> None:
    r = welch_t_test(_A1, _A2)
    assert round(r.t, 2) == -2.46 and round(r.df, 1) == 25.0 and round(r.p, 3) == 0.021
    a, b = np.array(_A1), np.array(_A2)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    assert r.t == pytest.approx((a.mean() - b.mean()) / math.sqrt(va + vb), rel=1e-12)
    assert r.df == pytest.approx((va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1)), rel=1e-12)
    assert r.diff == pytest.approx(a.mean() - b.mean())
    assert welch_t_test(_A2, _A1).p == pytest.approx(r.p) and welch_t_test(_A2, _A1).t == pytest.approx(-r.t)


def test_welch_by_hand_on_three_seeds() -> None:
    # a: mean 0.5, var 0.01; b: mean 0.2, var 0.0025 -> se^2 = 0.0125/3, t = 0.3/sqrt(0.0125/3) = 4.6476,
    # df = (0.0125/3)^2 / ((0.01/3)^2/2 + (0.0025/3)^2/2) = 2.941176...
    r = welch_t_test([0.4, 0.5, 0.6], [0.15, 0.2, 0.25])
    assert r.t == pytest.approx(0.3 / math.sqrt(0.0125 / 3), rel=1e-12)
    assert r.df == pytest.approx(0.0125 ** 2 / ((0.01 ** 2 + 0.0025 ** 2) / 2), rel=1e-12)
    # p from the incomplete-beta continued fraction this module used before scipy (agrees to 1e-15)
    assert r.p == pytest.approx(0.019619825759192865, rel=1e-12)


def test_welch_degenerate_groups() -> None:
    same = welch_t_test([0.0, 0.0, 0.0], [0.0, 0.0])
    assert (same.t, same.p) == (0.0, 1.0)
    apart = welch_t_test([1.0, 1.0], [0.0, 0.0, 0.0])  # equal counts per seed by chance: no test, not p = 0
    assert apart.t == math.inf and math.isnan(apart.p) and apart.diff == 1.0
    few = welch_t_test([0.3], [0.1, 0.2])
    assert math.isnan(few.p) and few.diff == pytest.approx(0.15)
    assert summarise([1.0, float("nan"), 3.0]).n == 2 and summarise([2.0]).sd != summarise([2.0]).sd  # NaN sd


def test_holm_adjustment_by_hand() -> None:
    # sorted 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> monotone 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    out = holm([0.2, math.nan, 0.6])
    assert out[0] == pytest.approx(0.4) and math.isnan(out[1]) and out[2] == pytest.approx(0.6)
    assert holm([0.5, 0.9]) == [1.0, 1.0]


def test_compact_letter_display_on_a_constructed_matrix() -> None:
    # A-C, A-D and B-D differ: A a, B ab, C bc, D c (Piepho 2004's insert-and-absorb).
    p = np.ones((4, 4))
    for i, j in ((0, 2), (0, 3), (1, 3)):
        p[i, j] = p[j, i] = 0.01
    assert compact_letter_display(p) == ["a", "ab", "bc", "c"]
    # Naming follows the given order (best first): with D best, D's group is "a".
    assert compact_letter_display(p, order=[3, 2, 1, 0]) == ["c", "bc", "ab", "a"]
    assert compact_letter_display(np.ones((3, 3))) == ["a", "a", "a"]
    all_diff = np.full((3, 3), 0.001)
    assert compact_letter_display(all_diff) == ["a", "b", "c"]
    nan = np.full((2, 2), np.nan)
    assert compact_letter_display(nan) == ["a", "a"]  # untestable pairs are not significant
    assert compact_letter_display(p, alpha=0.005) == ["a"] * 4


def test_letters_share_exactly_when_not_significant() -> None:
    rng = np.random.default_rng(7)
    for _ in range(30):
        k = int(rng.integers(3, 8))
        upper = np.triu(rng.uniform(0, 0.1, (k, k)), 1)
        p = upper + upper.T + np.eye(k)
        letters = compact_letter_display(p)
        for i in range(k):
            for j in range(i + 1, k):
                assert bool(set(letters[i]) & set(letters[j])) == (p[i, j] >= 0.05), (p, letters)


def test_pairwise_welch_is_holm_adjusted() -> None:
    groups = [[0.9, 0.8, 0.85], [0.2, 0.25, 0.3], [0.5, 0.55, 0.45]]
    p = pairwise_welch(groups)
    raw = [welch_t_test(groups[i], groups[j]).p for i, j in ((0, 1), (0, 2), (1, 2))]
    assert [p[0, 1], p[0, 2], p[1, 2]] == pytest.approx(holm(raw))
    assert np.allclose(p, p.T) and np.all(np.diag(p) == 1.0)


# --- study mixtures ----------------------------------------------------------------------------------


def test_rescale_keeps_phase_proportions() -> None:
    phases = [{"name": "a", "steps": 600, "weights": {"x": 1}}, {"name": "b", "steps": 600, "weights": {"y": 1},
                                                                 "ramp_steps": 60}]
    out = rescale_phases(phases, 101)
    assert [p["steps"] for p in out] == [50, 51] and out[1]["ramp_steps"] == 6
    assert rescale_phases(phases, 1200) == phases
    assert [p["steps"] for p in rescale_phases(phases, 2)] == [1, 1]
    with pytest.raises(ConfigError, match="fewer steps than the mixture has phases"):
        rescale_phases(phases, 1)


def test_lin2026_mixtures_share_the_target_and_name_study_datasets() -> None:
    from cotrain.lab.ablate.data import study_dataset_names
    from cotrain.lab.ablate.study import AblationConfig, load_study_mixtures, materialise

    cfg = AblationConfig(mixtures=(str(ROOT / "mixtures" / "lin2026"),), out="unused")
    mixtures, baseline = load_study_mixtures(cfg)
    assert baseline.name == "baseline" and len(mixtures) == 9
    names = set(study_dataset_names())
    for m in mixtures:
        doc = materialise(m, 2, 100)
        assert doc["seed"] == 2 and sum(p["steps"] for p in doc["phases"]) == 100
        assert doc["batch_size"] == 32 and materialise(m, 2, 100, 64)["batch_size"] == 64
        paths = [Path(s["path"]) for s in doc["sources"].values()]
        assert {p.name for p in paths} <= names and {p.parent for p in paths} == {ROOT / "data" / "lin2026"}
        assert doc["sources"]["target"]["path"].endswith("sim_arm")
    strategies = {m.name: m.spec.phases for m in mixtures}
    assert "target" not in strategies["two_phase_first_only"][0].weights
    assert strategies["two_phase_first_only"][1].weights == {"target": 1.0}
    assert set(strategies["two_phase_full"][1].weights) == set(strategies["cumulative"][0].weights)


# --- end to end ----------------------------------------------------------------------------------------


@pytest.fixture(autouse=False)
def one_thread(monkeypatch: pytest.MonkeyPatch):
    """One intra-op thread (2 shared cores: 2-thread kernels of a tiny model mostly spin)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(threads)


def _study(root: Path) -> Path:
    """Two mixtures over a study folder that does not exist yet: the runner prepares it."""
    mix = root / "mixtures"
    mix.mkdir()
    common = {"seed": 0, "batch_size": 4, "image_size": 32}
    docs = {
        "a_baseline.yaml": {"name": "baseline", **common, "sources": {"target": {"path": "../data/sim_arm"}},
                            "phases": [{"name": "train", "steps": 10, "weights": {"target": 1.0}}]},
        "b_two_phase.yaml": {"name": "vl_tokens_two_phase", **common,
                             "sources": {"target": {"path": "../data/sim_arm"}, "vl": {"path": "../data/sim_captions"},
                                         "tokens": {"path": "../data/sim_arm_tokens"}},
                             "phases": [{"name": "cotrain", "steps": 10, "weights": {"vl": 0.5, "tokens": 0.5}},
                                        {"name": "target", "steps": 10, "weights": {"target": 0.5, "vl": 0.5}}]},
    }
    for name, doc in docs.items():
        (mix / name).write_text(yaml.safe_dump(doc, sort_keys=False))
    return mix


def _config(root: Path, mix: Path, **fields: object):
    from cotrain.lab.ablate.data import StudyDataConfig
    from cotrain.lab.ablate.study import AblationConfig

    data = StudyDataConfig(episodes=3, other_episodes=2, human_episodes=2, vl_images=4, image_size=32,
                           heldout_episodes=2, heldout_vl_images=2, verbs=("pick",))
    # 32 px and the `tiny` preset keep it fast (the shipped backbone takes 64 px): the same path from random init
    base = dict(mixtures=(str(mix),), out=str(root / "out"), seeds=2, steps=4, episodes=4, eval_samples=6,
                model="tiny", init_from="none",
                train_overrides={"warmup_steps": 1, "save_every": 2, "log_every": 1, "keep_checkpoints": 2}, data=data)
    return AblationConfig(**{**base, **fields})  # type: ignore[arg-type]  # the test's field dict is typed loosely


@pytest.mark.slow
def test_tiny_study_end_to_end_and_resume(tmp_path: Path, one_thread: None) -> None:
    from cotrain.lab.ablate.runner import run_ablation

    mix = _study(tmp_path)
    cfg = _config(tmp_path, mix)
    messages: list[str] = []
    result = run_ablation(cfg, progress=messages.append)
    out = tmp_path / "out"
    # The study data was prepared with the real tools: tokens dataset and held-out sets included.
    data = tmp_path / "data"
    for name in ("sim_arm", "sim_captions", "sim_arm_tokens", "heldout/sim_arm", "heldout/sim_qa"):
        assert (data / name / "manifest.json").is_file(), name
    assert json.loads((data / "sim_arm_tokens" / "manifest.json").read_text())["modality"] == "action_tokens"
    assert result.baseline == "baseline" and result.mixtures == ["baseline", "vl_tokens_two_phase"]
    assert [(r.mixture, r.seed, r.trained, r.evaluated) for r in result.runs] == [
        ("baseline", 0, True, True), ("baseline", 1, True, True),
        ("vl_tokens_two_phase", 0, True, True), ("vl_tokens_two_phase", 1, True, True)]
    run = out / "runs" / "vl_tokens_two_phase" / "seed1"
    doc = yaml.safe_load((run / "mixture.yaml").read_text())
    assert doc["seed"] == 1 and [p["steps"] for p in doc["phases"]] == [2, 2]
    assert Path(doc["sources"]["vl"]["path"]) == (data / "sim_captions").resolve()
    rows = [json.loads(line) for line in (run / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert rows[0]["proportions"]["target"] == 0 and rows[3]["proportions"]["target"] == 0.5  # phase 2 mixes it in
    sim = json.loads((run / "sim.json").read_text())
    assert sim["config"]["episodes"] == 4 and sim["config"]["image_size"] == 32 and sim["config"]["verbs"] == ["pick"]
    assert sim["config"]["replan_steps"] == 4  # the study's default reaches the evaluator
    # The memorisation check replays the corpus's 3 training demos (train_episodes 48, capped at 3).
    on_train = json.loads((run / "sim_train.json").read_text())
    assert on_train["config"]["splits"] == ["train"] and on_train["config"]["episodes"] == 3
    demos = episodes_of(Dataset.open(data / "sim_arm"))
    assert [e["instruction"] for e in on_train["episodes"]] == [demos[str(i)][0]["instruction.txt"] for i in range(3)]
    offline = json.loads((run / "offline.json").read_text())
    assert set(offline["datasets"]) == {"sim_arm", "sim_captions", "sim_qa"} and offline["step"] == 4
    # Metrics per run, flat; statistics files; plots.
    metrics = json.loads((run / "result.json").read_text())["metrics"]
    assert metrics["train_seconds"] == rows[-1]["elapsed_s"] > 0  # the loop's clock, which survives a resume
    assert metrics["success_seen"] == sim["splits"]["seen"]["success_rate"]
    closest = [e["closest"] for e in sim["episodes"]]
    assert metrics["reach_overall"] == pytest.approx(sum(closest) / len(closest)) and metrics["reach_overall"] > 0
    assert metrics["vl_text_ce"] > 0 and metrics["action_mse"] > 0
    assert metrics["success_train"] == on_train["splits"]["train"]["success_rate"]
    assert metrics["reach_train"] == pytest.approx(on_train["splits"]["train"]["mean_closest"], abs=1e-4)
    assert metrics["success_overall"] == sim["overall"]["success_rate"]  # not the train file's overall
    # tracking_* are absent where fewer than 3 episodes closed the gripper (tracking_slope gives None).
    seen_episodes = [e for e in sim["episodes"] if e["split"] in ("seen", "seen_shift")]
    assert metrics.get("tracking_seen") == tracking_slope(seen_episodes)
    assert metrics.get("tracking_train") == tracking_slope(on_train["episodes"])
    settings = json.loads((run / "result.json").read_text())["settings"]
    assert settings["evaluation_version"] == EVALUATION_VERSION
    arm = offline["datasets"]["sim_arm"]["actions"]  # the only held-out set with actions
    assert metrics["image_gain"] == pytest.approx(arm["normalized"]["mse_shuffled_images"] - metrics["action_mse"])
    with open(out / "runs.csv") as fh:
        runs = list(csv.DictReader(fh))
    assert [(r["mixture"], r["seed"]) for r in runs] == [("baseline", "0"), ("baseline", "1"),
                                                         ("vl_tokens_two_phase", "0"), ("vl_tokens_two_phase", "1")]
    assert float(runs[3]["vl_text_ce"]) == pytest.approx(metrics["vl_text_ce"], rel=1e-5)
    with open(out / "results.csv") as fh:
        stats = {(r["metric"], r["mixture"]): r for r in csv.DictReader(fh)}
    ce = [r.metrics["vl_text_ce"] for r in result.runs]
    row = stats[("vl_text_ce", "vl_tokens_two_phase")]
    assert int(row["n"]) == 2 and float(row["mean"]) == pytest.approx(np.mean(ce[2:]), rel=1e-5)
    assert float(row["p_vs_baseline"]) == pytest.approx(welch_t_test(ce[2:], ce[:2]).p, rel=1e-4)
    assert stats[("vl_text_ce", "baseline")]["p_vs_baseline"] == "" and row["cld"] in {"a", "b"}
    md = (out / "results.md").read_text()
    assert "| vl_tokens_two_phase |" in md and "(baseline)" in md and "held-out VL text CE" in md
    assert "\nBatch 4; from `random init`; trainer: " in md and "optim.length_split True" in md
    # The scripted expert on the very episodes the runs saw: the ceiling beside them.
    expert = json.loads((out / "expert.json").read_text())["success"]
    ecfg = EvalConfig(**{k: sim["config"][k] for k in ("episodes", "embodiment", "image_size", "seed", "replan_steps")},
                      verbs=tuple(sim["config"]["verbs"]))
    again_expert = evaluate_policy(expert_policy(ecfg), ecfg)["splits"]
    assert expert == {k: {"successes": v["successes"], "episodes": v["episodes"]} for k, v in again_expert.items()}
    assert set(expert) == set(sim["splits"]) and result.settings["expert"] == expert
    cells = ", ".join(f"{k.replace('_', ' ')} {v['successes']}/{v['episodes']}" for k, v in expert.items())
    assert f"The scripted expert on the same episodes (the ceiling): {cells}." in md
    for png in ("success_per_split.png", "reach_per_split.png", "unseen_groups.png", "language_retention.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    # Written only when some run closed its gripper in at least 3 episodes of a split family.
    tracked = any(k.startswith("tracking_") for r in result.runs for k in r.metrics)
    assert (out / "tracking.png").is_file() == tracked
    assert any("[4/4] vl_tokens_two_phase seed 1: training 4 steps" in m for m in messages)

    # Second invocation: every run is kept (nothing trained or evaluated again), reports rewritten the same.
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and "runs" in p.parts}
    before[out / "expert.json"] = (out / "expert.json").stat().st_mtime_ns  # evaluated once per study
    again = run_ablation(cfg)
    assert again.skipped == 4 and [r.metrics for r in again.runs] == [r.metrics for r in result.runs]
    assert {p: p.stat().st_mtime_ns for p in before} == before
    # A run without its result is only evaluated; a run cut short continues from its checkpoint (in workers).
    (out / "runs" / "baseline" / "seed0" / "result.json").unlink()
    ckpt = out / "runs" / "baseline" / "seed1" / "train" / "checkpoints"
    (ckpt / "LATEST").write_text(json.dumps({"dir": "step_00000002"}))
    import shutil

    shutil.rmtree(ckpt / "step_00000004", ignore_errors=True)
    (out / "runs" / "baseline" / "seed1" / "result.json").unlink()
    third = run_ablation(cfg.model_copy(update={"jobs": 2}))  # two worker processes
    assert [(r.trained, r.evaluated) for r in third.runs] == [(False, True), (True, True), (False, False),
                                                               (False, False)]
    assert third.runs[0].metrics == result.runs[0].metrics
    resumed = {k: v for k, v in third.runs[1].metrics.items() if k != "train_seconds"}
    assert resumed == {k: v for k, v in result.runs[1].metrics.items() if k != "train_seconds"}  # exact resume
    # Turning the memorisation check off re-evaluates without retraining; the other metrics stay the same.
    fourth = run_ablation(cfg.model_copy(update={"train_episodes": 0}))
    assert [(r.trained, r.evaluated) for r in fourth.runs] == [(False, True)] * 4
    assert not (run / "sim_train.json").exists()
    assert fourth.runs[3].metrics == {k: v for k, v in result.runs[3].metrics.items() if not k.endswith("_train")}


def test_changed_steps_need_a_new_out(tmp_path: Path) -> None:
    from cotrain.lab.ablate.runner import _run_one
    from cotrain.lab.ablate.study import load_study_mixtures, materialise

    mix = _study(tmp_path)
    cfg = _config(tmp_path, mix, steps=6)
    mixtures, _ = load_study_mixtures(cfg)
    run = tmp_path / "out" / "runs" / "baseline" / "seed0"
    run.mkdir(parents=True)
    (run / "mixture.yaml").write_text("name: baseline\n")
    with pytest.raises(ConfigError, match="differs from the study's mixture for this run"):
        _run_one(cfg, mixtures[0], 0, materialise(mixtures[0], 0, 6), {}, lambda m: None)


def test_a_changed_batch_size_needs_a_new_out(tmp_path: Path) -> None:
    from cotrain.lab.ablate.runner import _run_one
    from cotrain.lab.ablate.study import dump_yaml, load_study_mixtures, materialise

    cfg = _config(tmp_path, _study(tmp_path), steps=6)
    mixtures, _ = load_study_mixtures(cfg)
    run = tmp_path / "out" / "runs" / "baseline" / "seed0"
    run.mkdir(parents=True)
    (run / "mixture.yaml").write_text(dump_yaml(materialise(mixtures[0], 0, 6)))
    with pytest.raises(ConfigError, match=r"--batch-size did\): use a new --out"):
        _run_one(cfg, mixtures[0], 0, materialise(mixtures[0], 0, 6, 5), {}, lambda m: None)
    with pytest.raises(ConfigError, match="--batch-size 0: must be at least 1"):
        cfg.model_validate({**cfg.model_dump(), "batch_size": 0})


def test_missing_datasets_outside_a_study_folder_are_an_error(tmp_path: Path) -> None:
    from cotrain.lab.ablate.runner import run_ablation
    from cotrain.lab.ablate.study import AblationConfig

    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"name": "baseline", "batch_size": 2, "sources": {"target": {"path": "nowhere/x"}},
                                    "phases": [{"name": "p", "steps": 2, "weights": {"target": 1}}]}))
    with pytest.raises(ConfigError, match=r"dataset .*nowhere/x not found; 1 missing"):
        run_ablation(AblationConfig(mixtures=(str(path),), out=str(tmp_path / "o")))
    with pytest.raises(ConfigError, match="no source called 'target'"):
        path.write_text(yaml.safe_dump({"name": "b", "batch_size": 2, "sources": {"targt": {"path": "x"}},
                                        "phases": [{"name": "p", "steps": 2, "weights": {"targt": 1}}]}))
        run_ablation(AblationConfig(mixtures=(str(path),), out=str(tmp_path / "o")))


def test_cli_refuses_missing_data_with_no_prepare(tmp_path: Path) -> None:
    from tests.helpers import run_cli

    mix = _study(tmp_path)
    proc = run_cli("ablate", str(mix), "--out", str(tmp_path / "out"), "--no-prepare", "--seeds", "1")
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: dataset ") and "sim_arm not found (--no-prepare); 3 missing" in proc.stderr
    assert not (tmp_path / "data").exists()
    bad = run_cli("ablate", str(mix), "--seeds", "0")
    assert bad.returncode == 1 and "error: --seeds 0: must be at least 1" in bad.stderr


# --- Settings: typed models, old study folders --------------------------------------------------------

# What the dict-and-dataclass version (commit 0795f40) stored for _config's study: study.json's
# `config`, and the evaluation settings each run's result.json holds (eval_data relative to DATA).
OLD_STUDY_CONFIG = {"episodes": 3, "other_episodes": 2, "human_episodes": 2, "vl_images": 4, "image_size": 32,
                    "seed": 0, "target": "sim_arm", "verbs": ["pick"], "heldout_episodes": 2, "heldout_vl_images": 2,
                    "tokenizer_vocab": 1024}
OLD_SETTINGS = {"evaluation_version": 2, "episodes": 4, "eval_seed": 0, "eval_samples": 6,
                "eval_data": ["heldout/sim_arm", "heldout/sim_captions", "heldout/sim_qa"], "embodiment": "sim_arm",
                "verbs": ["pick"], "image_size": 32, "target_source": "target", "train_episodes": 3,
                "corpus_seed": 0}
OLD_TRAIN = {"lr": 0.001, "warmup_steps": 1, "max_text_tokens": 160, "save_every": 2, "keep_checkpoints": 2,
             "log_every": 1, "tensorboard": False, "progress": False}


def test_an_old_study_folder_gives_the_settings_its_runs_stored(tmp_path: Path) -> None:
    """A run is kept on re-invocation when its stored settings equal the study's (runner._run_one): the
    typed config must compute exactly what the old one stored, from an old study.json."""
    from cotrain.lab.ablate.data import load_study_data
    from cotrain.lab.ablate.runner import _eval_settings
    from cotrain.lab.ablate.study import load_study_mixtures

    mix = _study(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    (data / "study.json").write_text(json.dumps({"config": OLD_STUDY_CONFIG, "heldout": OLD_SETTINGS["eval_data"]}))
    cfg = _config(tmp_path, mix, replan_steps=8)  # the evaluator's default, which old studies used
    mixtures, _ = load_study_mixtures(cfg)
    settings = _eval_settings(cfg, load_study_data(data), mixtures[0])
    assert {**settings, "eval_data": [str(Path(p).relative_to(data)) for p in settings["eval_data"]]} == OLD_SETTINGS
    # Trainer fields added since (bf16 where the CPU has the units, the length split) change how an unfinished
    # run would continue, so the trainer refuses to resume one (use a new --out); finished runs are kept.
    added = {"precision", "optim.length_split"}
    assert {k: v for k, v in cfg.train_fields().items() if k not in added} == OLD_TRAIN
    # Fields added since keep the old data at their defaults (questions_per_image=3, recovery=0.0: no
    # missed grasps, every demo bitwise as before; tests/unit/lab/sim/test_recovery.py).
    assert cfg.data.questions_per_image == 3 and cfg.data.recovery == 0.0
    assert cfg.data.model_dump(mode="json", exclude={"questions_per_image", "recovery"}) == OLD_STUDY_CONFIG


@pytest.mark.parametrize("units", [True, False])
def test_study_trains_in_bf16_only_where_the_cpu_has_bf16_units(units: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from cotrain.lab.ablate.config import AblationConfig
    from cotrain.train import config as train_config
    from cotrain.train.config import make_train_config

    monkeypatch.setattr(train_config, "cpu_bf16_pays", lambda: units)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    fields = AblationConfig(mixtures=("m.yaml",), init_from="none").train_fields()
    tcfg = make_train_config(mixture="m.yaml", steps=1, out="o", **fields)
    assert tcfg.parallel.precision == ("bf16" if units else "auto") and tcfg.optim.length_split
    forced = AblationConfig(mixtures=("m.yaml",), init_from="none", train_overrides={"precision": "fp32"})
    assert forced.train_fields()["precision"] == "fp32"  # --set wins


def test_settings_models_are_frozen_and_reject_unknown_and_bad_fields(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from cotrain.lab.ablate.config import AblationConfig, StudyDataConfig

    cfg = AblationConfig(mixtures=("m.yaml",))
    assert cfg.out == Path("ablation-out") and cfg.seeds == 3 and cfg.data == StudyDataConfig()
    assert cfg.model == "tiny-conv" and cfg.init_from == "sim-paligemma" and cfg.data.verbs == ("pick",)
    assert cfg.replan_steps == 4 and cfg.episodes == 384 and cfg.train_episodes == 48
    with pytest.raises(ValidationError):
        cfg.seeds = 4  # type: ignore[misc]
    with pytest.raises(ValidationError, match="seed_count"):
        AblationConfig(mixtures=("m.yaml",), seed_count=2)  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="--seeds 0: must be at least 1"):
        AblationConfig(mixtures=("m.yaml",), seeds=0)
    with pytest.raises(ConfigError, match="--set seed: the study sets this itself"):
        AblationConfig(mixtures=("m.yaml",), train_overrides={"seed": 1})
    held = StudyDataConfig(seed=5, heldout_episodes=7, verbs=("pick",)).heldout_corpus()
    assert (held.seed, held.episodes, held.other_episodes, held.verbs) == (1005, 7, 1, ("pick",))


def test_cli_options_are_the_config_fields() -> None:
    import typer

    from cotrain.cli.app import app
    from cotrain.lab.ablate.config import AblationConfig

    command = typer.main.get_command(app).commands["ablate"]  # type: ignore[attr-defined]
    params = {p.name: p for p in command.params}
    for name in ("out", "seeds", "steps", "episodes", "train_episodes", "eval_samples", "eval_data", "baseline",
                 "model", "prepare", "jobs", "threads"):
        assert params[name].opts == ["--" + name.replace("_", "-")], name
        default = AblationConfig.model_fields[name].default
        assert params[name].default == (list(default) if isinstance(default, tuple) else default), name
    assert params["prepare"].secondary_opts == ["--no-prepare"] and params["sets"].opts == ["--set"]
    assert params["eval_data"].multiple and params["mixtures"].nargs == -1


def test_a_corpus_made_with_other_settings_is_refused_not_reused(tmp_path: Path) -> None:
    """Preparation resumes a study folder; a corpus generated with another size (say the old default
    of 1,024 demos) must not be reused and recorded as the new one. Fields added since are defaults."""
    from cotrain.errors import ConfigError
    from cotrain.lab.ablate.data import _corpus
    from cotrain.lab.corpus_config import CorpusConfig

    cfg = CorpusConfig(episodes=2, other_episodes=1, human_episodes=1, vl_images=1, image_size=32, verbs=("pick",))
    raw, out = tmp_path / "raw", tmp_path / "data"
    _corpus(raw, out, cfg)
    record = json.loads((raw / "corpus.json").read_text())
    del record["config"]["recovery"]  # as corpora made before the field existed
    (raw / "corpus.json").write_text(json.dumps(record))
    _corpus(raw, out, cfg)  # the same settings: kept
    with pytest.raises(ConfigError, match=r"corpus.json: this corpus was generated with episodes=2, the study asks "
                                          r"for 3; remove .* to regenerate it"):
        _corpus(raw, out, cfg.model_copy(update={"episodes": 3}))
    assert json.loads((raw / "corpus.json").read_text())["config"]["episodes"] == 2
    before = sorted(p.name for p in out.iterdir())
    cases = ((dict(record["config"], episodes="many"),
              r"corpus.json: unreadable corpus config \(config.episodes: Input should be a valid integer"),
             ([1, 2], r"corpus.json: no 'config' object"))
    for bad, message in cases:
        (raw / "corpus.json").write_text(json.dumps({**record, "config": bad}))
        with pytest.raises(ConfigError, match=message) as info:
            _corpus(raw, out, cfg)
        assert "\n" not in str(info.value)
    assert sorted(p.name for p in out.iterdir()) == before  # nothing converted again or removed


def test_report_marks_equal_counts_per_seed_untestable(tmp_path: Path) -> None:
    """2/48 in every baseline seed against 3/48 in every other seed: a difference, but no p = 0 and no letters split."""
    from cotrain.lab.ablate.report import write_report
    from cotrain.lab.ablate.runner import AblationResult, RunRecord

    def run(mixture: str, seed: int, unseen: float, seen: float) -> RunRecord:
        return RunRecord(mixture, seed, tmp_path / mixture / str(seed),
                         {"success_unseen": unseen, "success_seen": seen}, trained=True, evaluated=True)

    result = AblationResult(tmp_path, "baseline", ["baseline", "annotations"], {"seeds": 3})
    result.runs = [run("baseline", s, 2 / 48, v) for s, v in enumerate((0.3, 0.5, 0.45))]
    result.runs += [run("annotations", s, 3 / 48, v) for s, v in enumerate((0.25, 0.3, 0.35))]
    write_report(result)
    md = (tmp_path / "results.md").read_text()
    p_seen = welch_t_test([0.25, 0.3, 0.35], [0.3, 0.5, 0.45]).p  # a varying metric keeps its p-value
    assert f"| annotations | -0.117 (p={p_seen:.3g}) |" in md
    assert "+0.021 (p n/a)" in md and "(p=0)" not in md
    with open(tmp_path / "results.csv") as fh:
        rows = {(r["metric"], r["mixture"]): r for r in csv.DictReader(fh)}
    assert rows[("success_unseen", "annotations")]["p_vs_baseline"] in {"", "nan"}
    assert rows[("success_unseen", "annotations")]["cld"] == rows[("success_unseen", "baseline")]["cld"] == "a"


def test_a_damaged_expert_cache_is_evaluated_again(tmp_path: Path) -> None:
    from cotrain.lab.ablate.runner import expert_reference

    settings = {"episodes": 4, "embodiment": "sim_arm", "image_size": 32, "eval_seed": 0, "verbs": ["pick"],
                "replan_steps": 4}
    first = expert_reference(tmp_path, settings)
    assert first is not None and sum(v["episodes"] for v in first.values()) == 4
    for damage in ("{", "[1, 2]", '{"settings": {}, "success": 3}'):
        (tmp_path / "expert.json").write_text(damage)
        assert expert_reference(tmp_path, settings) == first
        assert json.loads((tmp_path / "expert.json").read_text())["success"] == first  # rewritten whole
