"""The study's tables: `runs.csv` (one row per run), `results.csv` and `results.md` (per mixture and metric).

For every tested metric (metrics.METRICS) and mixture: n, mean and sample SD over seeds; a two-sided
Welch t-test against the baseline (unadjusted p: one planned comparison per mixture and metric); and
a compact letter display at 5 % family-wise error: all pairwise Welch tests among the mixtures,
Holm-corrected per metric, turned into letters by insert-and-absorb (stats.py). Letters are named
from the best mean down ("a" = best group); mixtures sharing a letter are not significantly different.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cotrain.atomic import write_text_atomic
from cotrain.lab.ablate.findings import FindingResult, assess_findings
from cotrain.lab.ablate.metrics import METRICS, MetricDef
from cotrain.lab.ablate.significance import (
    Summary,
    WelchResult,
    compact_letter_display,
    pairwise_welch,
    summarise,
    welch_t_test,
)

if TYPE_CHECKING:
    from cotrain.lab.ablate.runner import AblationResult

__all__ = ["MetricStats", "study_statistics", "write_report"]

ALPHA = 0.05


@dataclass(frozen=True)
class MetricStats:
    """One metric across the study's mixtures (same order as the study's mixture list)."""

    metric: MetricDef
    summaries: list[Summary]
    vs_baseline: list[WelchResult | None]  # None for the baseline itself
    letters: list[str]


def _values(result: AblationResult, mixture: str, key: str) -> list[float]:
    return [r.metrics[key] for r in result.runs if r.mixture == mixture and key in r.metrics]


def study_statistics(result: AblationResult) -> list[MetricStats]:
    """Statistics of every metric some run reports (see module docstring)."""
    out = []
    for metric in METRICS:
        groups = [_values(result, m, metric.key) for m in result.mixtures]
        if not any(groups):
            continue
        summaries = [summarise(g) for g in groups]
        base = groups[result.mixtures.index(result.baseline)]
        tests = [None if m == result.baseline else welch_t_test(g, base) for m, g in zip(result.mixtures, groups)]
        letters = [""] * len(groups)
        if metric.tested:
            sign = -1.0 if metric.higher_is_better else 1.0
            order = sorted(range(len(groups)), key=lambda i: (math.isnan(summaries[i].mean), sign * summaries[i].mean))
            letters = compact_letter_display(pairwise_welch(groups), order, ALPHA)
        out.append(MetricStats(metric, summaries, tests, letters))
    return out


def _num(value: float | None, digits: int = 4) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.{digits}g}"


def _runs_csv(result: AblationResult) -> str:
    keys = [m.key for m in METRICS if any(m.key in r.metrics for r in result.runs)]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["mixture", "seed", *keys, "run_dir"])
    for r in result.runs:
        writer.writerow([r.mixture, r.seed, *(_num(r.metrics.get(k), 6) for k in keys), _rel(r.run_dir, result.out)])
    return buf.getvalue()


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _results_csv(result: AblationResult, stats: list[MetricStats]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["metric", "mixture", "n", "mean", "sd", "diff_vs_baseline", "t", "df", "p_vs_baseline", "cld"])
    for st in stats:
        for name, s, test, letters in zip(result.mixtures, st.summaries, st.vs_baseline, st.letters):
            row = [st.metric.key, name, s.n, _num(s.mean, 6), _num(s.sd, 6)]
            row += [_num(test.diff, 6), _num(test.t, 6), _num(test.df, 6), _num(test.p, 6)] if test else [""] * 4
            writer.writerow([*row, letters])
    return buf.getvalue()


def _cell(s: Summary, letters: str) -> str:
    if s.n == 0:
        return "–"
    sd = "" if math.isnan(s.sd) else f" ± {s.sd:.3f}"
    return f"{s.mean:.3f}{sd}" + (f" {letters}" if letters else "")


def _p_cell(test: WelchResult | None) -> str:
    if test is None:
        return "(baseline)"
    if math.isnan(test.p):
        return "n/a" if math.isnan(test.diff) else f"{test.diff:+.3f} (p n/a)"
    stars = "**" if test.p < 0.01 else "*" if test.p < ALPHA else ""
    return f"{test.diff:+.3f} (p={test.p:.3g}){stars}"


def _table(result: AblationResult, stats: list[MetricStats], title: str, cell: Any) -> list[str]:
    if not stats:
        return []
    lines = [f"### {title}", "", "| mixture | " + " | ".join(s.metric.label for s in stats) + " |",
             "|---|" + "---|" * len(stats)]
    for i, name in enumerate(result.mixtures):
        lines.append(f"| {name} | " + " | ".join(cell(s, i) for s in stats) + " |")
    return [*lines, ""]


_LABELS = {m.key: m.label for m in METRICS}


def _findings_md(findings: list[FindingResult]) -> list[str]:
    if not findings:
        return []
    lines = ["### The paper's findings, as tested here", "",
             "Each finding of Lin et al. (2026) as planned checks: a mixture against a reference on one metric, "
             "read from the unadjusted Welch test at 5 % (`supports`, `against`, `not significant`; for a "
             "finding of no change, `consistent` when the test finds no difference). A finding is `reproduced` "
             "when every check supports it (cotrain/lab/ablate/findings.py; docs/ablation.md).", ""]
    for f in findings:
        lines += [f"**{f.finding.claim}: {f.verdict}.**", "", "| check | expected | difference | p | verdict |",
                  "|---|---|---|---|---|"]
        for c in f.checks:
            p = "n/a" if math.isnan(c.test.p) else f"{c.test.p:.3g}"
            lines.append(f"| {c.check.mixture} vs {c.check.reference}, {_LABELS[c.check.metric]} | "
                         f"{c.check.expect} | {c.test.diff:+.3f} | {p} | {c.verdict} |")
        lines.append("")
    return lines


def _findings_csv(findings: list[FindingResult]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["finding", "finding_verdict", "mixture", "reference", "metric", "expect", "diff", "p", "verdict"])
    for f in findings:
        for c in f.checks:
            writer.writerow([f.finding.claim, f.verdict, c.check.mixture, c.check.reference, c.check.metric,
                             c.check.expect, _num(c.test.diff, 6), _num(c.test.p, 6), c.verdict])
    return buf.getvalue()


def _expert_line(s: dict[str, Any]) -> list[str]:
    """The scripted expert on the same episodes (the ceiling), where the study evaluated it."""
    expert = s.get("expert") or {}
    if not expert:
        return []
    cells = [f"{split.replace('_', ' ')} {v['successes']}/{v['episodes']}" for split, v in expert.items()]
    return [f"The scripted expert on the same episodes (the ceiling): {', '.join(cells)}."]


def _training_line(s: dict[str, Any]) -> list[str]:
    """Batch, starting point and trainer settings of every run (absent from reports of older studies)."""
    if "batch_size" not in s:
        return []
    batches = sorted(set((s.get("batch_size") or {}).values()))
    init = Path(s["init_from"]).name if s.get("init_from") not in (None, "none") else "random init"
    train = ", ".join(f"{k} {v}" for k, v in sorted((s.get("train") or {}).items()))
    return [f"Batch {' / '.join(map(str, batches))}; from `{init}`; trainer: {train}."]


def _markdown(result: AblationResult, stats: list[MetricStats], findings: list[FindingResult]) -> str:
    s = result.settings
    seeds_done = {m: len({r.seed for r in result.runs if r.mixture == m}) for m in result.mixtures}
    head = [
        "# Ablation results", "",
        f"Baseline: `{result.baseline}`. Seeds per mixture: {', '.join(f'{m} {n}' for m, n in seeds_done.items())}.",
        f"Model `{s.get('model')}`; steps per run: {', '.join(f'{m} {n}' for m, n in (s.get('steps') or {}).items())}.",
        *_training_line(s),
        f"Simulator: {s.get('episodes')} episodes per run (seed {s.get('eval_seed')}, robot {s.get('embodiment')}, "
        f"verbs {', '.join(s.get('verbs') or [])}); offline: up to {s.get('eval_samples')} samples of each held-out "
        f"dataset ({', '.join(Path(p).name for p in s.get('eval_data') or [])}).",
        *_expert_line(s), "",
        "Cells: mean ± SD over seeds, then compact letters (pairwise Welch t-tests, Holm-corrected, 5 % FWER; "
        "`a` = best; mixtures sharing a letter do not differ significantly). The second table: difference to the "
        "baseline and the unadjusted two-sided Welch p-value (* p < 0.05, ** p < 0.01; `p n/a`: neither group varies "
        "across seeds, or one has a single run, so a t-test cannot judge the difference).", "",
    ]
    tested = [st for st in stats if st.metric.tested]
    main = [st for st in tested if not st.metric.key.startswith("unseen_")]
    groups = [st for st in tested if st.metric.key.startswith("unseen_")]
    context = [st for st in stats if not st.metric.tested]
    body = _table(result, main, "Success per split and offline metrics",
                  lambda st, i: _cell(st.summaries[i], st.letters[i]))
    body += _table(result, main, "Difference to the baseline (Welch)", lambda st, i: _p_cell(st.vs_baseline[i]))
    body += _table(result, groups, "Unseen tasks by the modality that carries their concept",
                   lambda st, i: _cell(st.summaries[i], st.letters[i]))
    body += _table(result, groups, "Unseen groups: difference to the baseline (Welch)",
                   lambda st, i: _p_cell(st.vs_baseline[i]))
    body += _table(result, context, "Context (not tested)", lambda st, i: _cell(st.summaries[i], ""))
    return "\n".join(head + _findings_md(findings) + body)


def write_report(result: AblationResult) -> dict[str, Path]:
    """Write runs.csv, results.csv, results.md and (for the paper's mixtures) findings.csv; returns their paths."""
    stats = study_statistics(result)
    findings = assess_findings(result)
    files = {"runs.csv": _runs_csv(result), "results.csv": _results_csv(result, stats),
             "results.md": _markdown(result, stats, findings)}
    if findings:
        files["findings.csv"] = _findings_csv(findings)
    out = {}
    for name, text in files.items():
        path = result.out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, text)
        out[name] = path
    return out
