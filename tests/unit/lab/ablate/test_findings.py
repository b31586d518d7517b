"""The paper's findings as planned checks: verdicts from Welch tests, and the report section they make."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from cotrain.lab.ablate.findings import Check, Finding, assess_findings
from cotrain.lab.ablate.report import write_report
from cotrain.lab.ablate.runner import AblationResult, RunRecord
from cotrain.lab.ablate.significance import welch_t_test

BASE = {"success_unseen": (0.10, 0.12, 0.14), "vl_text_ce": (6.0, 6.5, 7.0), "success_seen": (0.4, 0.5, 0.45)}
RUNS = {
    "baseline": BASE,
    # much better unseen (supports), lower CE (supports: lower is better), seen unchanged (consistent)
    "vl": {"success_unseen": (0.30, 0.32, 0.35), "vl_text_ce": (0.07, 0.08, 0.075), "success_seen": (0.42, 0.47, 0.4)},
    # clearly worse unseen (against), CE as the baseline (not significant), seen far lower (against "same")
    "cross_embodiment": {"success_unseen": (0.0, 0.0, 0.01), "vl_text_ce": (6.2, 6.6, 6.8),
                         "success_seen": (0.1, 0.12, 0.08)},
}


def _result(tmp_path: Path, runs: dict[str, dict[str, tuple[float, ...]]]) -> AblationResult:
    result = AblationResult(tmp_path, "baseline", list(runs), {"seeds": 3})
    for mixture, metrics in runs.items():
        for seed in range(3):
            result.runs.append(RunRecord(mixture, seed, tmp_path / mixture, {k: v[seed] for k, v in metrics.items()},
                                         trained=True, evaluated=True))
    return result


def test_check_verdicts_follow_welch_and_the_metric_direction(tmp_path: Path) -> None:
    finding = Finding("toy", (Check("vl", "baseline", "success_unseen"), Check("vl", "baseline", "vl_text_ce"),
                              Check("vl", "baseline", "success_seen", "same"),
                              Check("cross_embodiment", "baseline", "success_unseen"),
                              Check("cross_embodiment", "baseline", "vl_text_ce"),
                              Check("cross_embodiment", "baseline", "success_seen", "same")))
    [res] = assess_findings(_result(tmp_path, RUNS), (finding,))
    assert [c.verdict for c in res.checks] == ["supports", "supports", "consistent", "against", "not significant",
                                               "against"]
    assert res.verdict == "mixed"
    first = res.checks[0].test
    assert first.p == welch_t_test(RUNS["vl"]["success_unseen"], BASE["success_unseen"]).p and first.diff > 0
    assert res.checks[1].test.diff < 0  # CE fell: better, because lower is better for it


def test_finding_verdicts_and_skipping(tmp_path: Path) -> None:
    result = _result(tmp_path, RUNS)
    good = Finding("good", (Check("vl", "baseline", "success_unseen"), Check("vl", "baseline", "success_seen", "same")))
    bad = Finding("bad", (Check("cross_embodiment", "baseline", "success_unseen"),))
    some = Finding("some", (Check("vl", "baseline", "success_unseen"),
                            Check("cross_embodiment", "baseline", "vl_text_ce")))
    none = Finding("none", (Check("cross_embodiment", "baseline", "vl_text_ce"),))
    absent = Finding("absent", (Check("cumulative", "baseline", "success_unseen"),))
    verdicts = {f.finding.claim: f.verdict for f in assess_findings(result, (good, bad, some, none, absent))}
    assert verdicts == {"good": "reproduced", "bad": "contradicted", "some": "partly", "none": "not shown"}
    constant = _result(tmp_path, {"baseline": {"success_unseen": (0.04,) * 3}, "vl": {"success_unseen": (0.06,) * 3}})
    [res] = assess_findings(constant, (Finding("c", (Check("vl", "baseline", "success_unseen"),)),))
    assert res.checks[0].verdict == "no test" and res.verdict == "not shown"


def test_report_writes_the_paper_findings_present_in_the_study(tmp_path: Path) -> None:
    splits = ("success_unseen", "success_seen_shift", "success_unseen_shift", "unseen_vision_language",
              "unseen_cross_embodiment")
    runs = {m: {k: RUNS[m]["success_unseen"] for k in splits} | RUNS[m] for m in RUNS}
    files = write_report(_result(tmp_path, runs))
    md = files["results.md"].read_text()
    assert "### The paper's findings, as tested here" in md
    assert "**Vision-language and cross-embodiment data improve unseen tasks and robustness to shift: mixed.**" in md
    p = welch_t_test(runs["vl"]["success_unseen"], BASE["success_unseen"]).p
    assert f"| vl vs baseline, success, unseen | better | +0.203 | {p:.3g} | supports |" in md
    # Findings that name mixtures this study lacks (cumulative, the two-phase pair, action tokens) are left out.
    assert "Effective modalities stack" not in md and "Robot-only training erodes" not in md
    with open(files["findings.csv"]) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8 and {r["finding_verdict"] for r in rows} == {"mixed"}
    assert rows[0]["mixture"] == "vl" and rows[0]["verdict"] == "supports"
    assert float(rows[0]["p"]) == pytest.approx(p, rel=1e-5)
    other = write_report(_result(tmp_path / "other", {"baseline": BASE, "other": BASE}))
    assert "findings.csv" not in other and "paper's findings" not in other["results.md"].read_text()
