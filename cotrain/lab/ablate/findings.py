"""The Lin et al. (2026) findings as planned comparisons, and what a study's runs say about each.

Each finding of the paper (notes in docs/ablation.md) becomes a few checks: a mixture against a
reference mixture on one metric, with the direction the paper reports ("better") or no change
("same"). A check is read from the unadjusted two-sided Welch test (significance.py) at 5 %:

- `supports`: significant, in the paper's direction; for "same": not significant (`consistent`);
- `against`: significant, the other way (for "same": any significant difference);
- `not significant`: the difference has the paper's sign or not, but the test cannot tell;
- `no test`: fewer than two runs on a side, or no spread on either side.

A finding is `reproduced` when every check supports it, `partly` when some do and none is against,
`not shown` when none does either way, `contradicted` when some check is against and none supports,
and `mixed` otherwise. With three seeds a Welch test has few degrees of freedom, so `not shown`
is weak evidence of no effect; "same" checks are only ever `consistent`, never proof of equality.
Checks name the mixtures of `mixtures/lin2026`; a finding whose mixtures a study lacks is left out,
so a study of other mixtures gets no section.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from cotrain.lab.ablate.metrics import METRICS
from cotrain.lab.ablate.significance import WelchResult, welch_t_test

if TYPE_CHECKING:
    from cotrain.lab.ablate.runner import AblationResult

__all__ = ["LIN2026_FINDINGS", "Check", "CheckResult", "Finding", "FindingResult", "assess_findings"]

ALPHA = 0.05
Expect = Literal["better", "same"]


@dataclass(frozen=True)
class Check:
    """`mixture` against `reference` on `metric`: better (in the metric's good direction) or the same."""

    mixture: str
    reference: str
    metric: str
    expect: Expect = "better"


@dataclass(frozen=True)
class Finding:
    """A claim of the paper and the checks that test it here."""

    claim: str
    checks: tuple[Check, ...]


def _each(mixtures: tuple[str, ...], reference: str, metrics: tuple[str, ...],
          expect: Expect = "better") -> tuple[Check, ...]:
    return tuple(Check(m, reference, k, expect) for m in mixtures for k in metrics)


_GENERALISE = ("success_unseen", "success_seen_shift", "success_unseen_shift")
_MODALITIES = ("vl", "annotations", "cross_embodiment", "human_video", "action_tokens", "cumulative")

LIN2026_FINDINGS: tuple[Finding, ...] = (
    Finding("Vision-language and cross-embodiment data improve unseen tasks and robustness to shift",
            (*_each(("vl", "cross_embodiment"), "baseline", _GENERALISE),
             Check("vl", "baseline", "unseen_vision_language"),
             Check("cross_embodiment", "baseline", "unseen_cross_embodiment"))),
    Finding("Effective modalities stack",
            (Check("cumulative", "baseline", "success_unseen"), Check("cumulative", "vl", "success_unseen"),
             Check("cumulative", "cross_embodiment", "success_unseen"))),
    Finding("Discrete action tokens add little",
            _each(("action_tokens",), "baseline", ("success_seen", "success_unseen"), "same")),
    Finding("Co-training data should stay in the second phase too (two-phase full over first-phase only)",
            (*_each(("two_phase_full",), "two_phase_first_only", _GENERALISE),
             Check("two_phase_full", "two_phase_first_only", "vl_text_ce"))),
    Finding("Robot-only training erodes language; co-training with VL data keeps it",
            _each(("vl", "cumulative", "two_phase_full"), "baseline", ("vl_text_ce",))),
    Finding("No co-training modality changes seen-task success",
            _each(_MODALITIES, "baseline", ("success_seen",), "same")),
)


@dataclass(frozen=True)
class CheckResult:
    """A check's Welch test (mixture minus reference) and its verdict."""

    check: Check
    test: WelchResult
    verdict: str


@dataclass(frozen=True)
class FindingResult:
    """A finding's checks and its overall verdict."""

    finding: Finding
    checks: tuple[CheckResult, ...]
    verdict: str


def _verdict(check: Check, test: WelchResult, higher_is_better: bool) -> str:
    if math.isnan(test.p):
        return "no test"
    significant = test.p < ALPHA
    if check.expect == "same":
        return "against" if significant else "consistent"
    improved = test.diff > 0 if higher_is_better else test.diff < 0
    return ("supports" if improved else "against") if significant else "not significant"


def _overall(verdicts: list[str]) -> str:
    support = sum(v in ("supports", "consistent") for v in verdicts)
    against = verdicts.count("against")
    if support == len(verdicts):
        return "reproduced"
    if support and against:
        return "mixed"
    if against:
        return "contradicted"
    return "partly" if support else "not shown"


def assess_findings(result: AblationResult, findings: tuple[Finding, ...] = LIN2026_FINDINGS) -> list[FindingResult]:
    """Every finding whose mixtures and metrics the study has, with its checks' Welch tests and verdicts."""
    better = {m.key: m.higher_is_better for m in METRICS}

    def values(mixture: str, key: str) -> list[float]:
        return [r.metrics[key] for r in result.runs if r.mixture == mixture and key in r.metrics]

    out = []
    for finding in findings:
        if not all(values(c.mixture, c.metric) and values(c.reference, c.metric) for c in finding.checks):
            continue
        checks = []
        for c in finding.checks:
            test = welch_t_test(values(c.mixture, c.metric), values(c.reference, c.metric))
            checks.append(CheckResult(c, test, _verdict(c, test, better[c.metric])))
        out.append(FindingResult(finding, tuple(checks), _overall([c.verdict for c in checks])))
    return out
