"""Training metrics: per-step rows gathered over ranks, written as JSONL and TensorBoard scalars.

A row (rank 0 writes `RUN/metrics.jsonl`, one JSON object per logged step):
`step`, `loss` (the optimised objective: mean over the global batch of loss_weight x weighted terms),
`flow`, `text`, `action_tokens` (each the mean over the samples that have that term),
`loss_source` / `loss_modality` (mean per-sample loss, unweighted by loss_weight, per source and
modality present in the step), `proportions` (realised share of each source in the global batch),
`lr`, `grad_norm`, `step_time_s`, `samples_per_s`, `tokens_per_s`, `data_wait` (fraction of the step
spent waiting for the loader and tokenising), `truncated` (samples whose text was cut), `elapsed_s`
(seconds of the training loop since step 0; a resumed run continues from its checkpoint's, so work
a kill threw away is not counted, and setup before the first step is not either) and, on GPU,
`mfu` (model FLOPs utilisation, an estimate: 6 x parameters x tokens for each stream plus attention).
With watching on (docs/training.md, "Watching a run"), a row also holds `bad_samples` /
`bad_fraction` (per source, cumulative over the run and all ranks) and, at validation steps, `val`
(the `cotrain eval` report of each held-out dataset).
On resume, rows at or after the restored step are dropped first, so the file reads as one run.
Every scalar of a row (nested dicts flattened to `a/b/c`) goes to each sink: TensorBoard, W&B.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol, cast

import torch

from cotrain.atomic import writing
from cotrain.model.losses import TERMS

__all__ = ["MetricsLogger", "PEAK_TFLOPS", "SampleMetrics", "ScalarSink", "TensorBoardSink", "flops_per_step",
           "peak_tflops", "summarise_step"]

METRICS_FILE = "metrics.jsonl"
# Dense bf16 peak (no sparsity) by device-name fragment, for the MFU estimate.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L40": 181.0, "A10G": 125.0,
               "4090": 165.0, "3090": 71.0}


def peak_tflops(override: float | None) -> float | None:
    """Peak TFLOP/s for MFU: the override, else PEAK_TFLOPS of the current GPU, else None."""
    if override is not None:
        return override
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


class SampleMetrics(NamedTuple):
    """What the metrics need of each sample of a step, one [N] float32 tensor per field: its source and
    modality index, each loss term with the number of positions it averaged (0: no such term), its
    `loss_weight` and its valid tokens (text + image + action tokens, for `tokens_per_s`).

    Ranks exchange it as one [N, 10] tensor (`pack`/`unpack`), so logging costs one all_gather."""

    source: torch.Tensor
    modality: torch.Tensor
    flow: torch.Tensor
    flow_count: torch.Tensor
    text: torch.Tensor
    text_count: torch.Tensor
    action_tokens: torch.Tensor
    action_tokens_count: torch.Tensor
    loss_weight: torch.Tensor
    tokens: torch.Tensor

    def pack(self) -> torch.Tensor:
        """[N, 10], columns in field order."""
        return torch.stack(tuple(self), dim=1)

    @classmethod
    def unpack(cls, packed: torch.Tensor) -> SampleMetrics:
        return cls(*packed.unbind(1))

    @classmethod
    def cat(cls, parts: Sequence[SampleMetrics]) -> SampleMetrics:
        """The micro-batches of a step as one."""
        return cls(*(torch.cat(column) for column in zip(*parts)))

    def term(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-sample value, position count) of the loss term `name` (one of TERMS)."""
        return getattr(self, name), getattr(self, f"{name}_count")


def summarise_step(samples: SampleMetrics, weights: dict[str, float], source_names: list[str],
                   modality_names: list[str]) -> dict[str, Any]:
    """Aggregate a step's per-sample metrics (of all ranks) into the row's loss fields."""
    source, modality = samples.source.long(), samples.modality.long()
    # TERMS is non-empty, so the sum is a tensor (never the int start value 0)
    per_sample = cast(torch.Tensor, sum(weights[name] * samples.term(name)[0] for name in TERMS))
    out: dict[str, Any] = {"loss": float((samples.loss_weight * per_sample).mean())}
    for name in TERMS:
        value, count = samples.term(name)
        has = count > 0
        out[name] = float(value[has].mean()) if bool(has.any()) else None
    out["loss_source"] = {n: float(per_sample[source == i].mean()) for i, n in enumerate(source_names)
                          if bool((source == i).any())}
    out["loss_modality"] = {n: float(per_sample[modality == i].mean()) for i, n in enumerate(modality_names)
                            if bool((modality == i).any())}
    out["proportions"] = {n: float((source == i).float().mean()) for i, n in enumerate(source_names)}
    return out


def flops_per_step(model: torch.nn.Module, images: int, prefix_tokens: int, suffix_tokens: int, batch: int) -> float:
    """Training FLOPs of one step: 6 x params x tokens per stream, plus 12 x layers x width x seq^2 attention."""
    # The VLA's submodules: nn.Module types every attribute as Tensor | Module.
    vla: Any = model
    vision = sum(p.numel() for p in vla.vision_tower.parameters()) + sum(p.numel() for p in vla.projector.parameters())
    backbone = sum(p.numel() for b in vla.blocks for p in b.backbone.parameters())
    expert = sum(p.numel() for b in vla.blocks for p in b.expert.parameters())
    attn = vla.blocks[0].backbone.self_attn
    width = attn.q_proj.out_features if hasattr(attn.q_proj, "out_features") else attn.head_dim
    seq = prefix_tokens + suffix_tokens
    dense = 6.0 * (vision * images * vla.image_tokens + backbone * prefix_tokens * batch
                   + expert * suffix_tokens * batch)
    return dense + 12.0 * len(vla.blocks) * width * seq * seq * batch


class ScalarSink(Protocol):
    """Somewhere the flattened scalars of a row go (TensorBoard, W&B): names like `loss_source/robot`."""

    def write(self, scalars: list[tuple[str, float]], step: int) -> None: ...

    def close(self) -> None: ...


class TensorBoardSink:
    """`RUN/tensorboard/` event files; on resume, events at or after the restored step are purged."""

    def __init__(self, run_dir: Path, start_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step)

    def write(self, scalars: list[tuple[str, float]], step: int) -> None:
        for key, value in scalars:
            self._writer.add_scalar(key, value, step)

    def close(self) -> None:
        self._writer.close()


class MetricsLogger:
    """JSONL writer of rank 0 that hands every row's scalars to each sink (one fan-out for all of them);
    other ranks get a logger that writes nothing."""

    def __init__(self, run_dir: Path, start_step: int, *, enabled: bool, sinks: Sequence[ScalarSink] = ()) -> None:
        self.enabled = enabled
        self.path = run_dir / METRICS_FILE
        self.sinks = list(sinks) if enabled else []
        if not enabled:
            return
        if self.path.is_file():
            from cotrain.atomic import write_text_atomic

            write_text_atomic(self.path, "".join(line + "\n" for line in _rows_before(self.path, start_step)))
        with writing(self.path):  # a full disk is one line naming the file, as for checkpoints
            self._fh = open(self.path, "a", encoding="utf-8")

    def log(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with writing(self.path):  # a partial last line is dropped on --resume (_rows_before)
            self._fh.write(json.dumps(_clean(row), sort_keys=True, allow_nan=False) + "\n")
            self._fh.flush()
        scalars = _flatten(row)
        for sink in self.sinks:
            sink.write(scalars, row["step"])

    def close(self) -> None:
        if self.enabled:
            self._fh.close()
            for sink in self.sinks:
                sink.close()


def _rows_before(path: Path, start_step: int) -> list[str]:
    """The lines of a metrics file for steps before `start_step`. A last line that is not a complete
    row is what a kill in mid-write leaves: dropped (its step is re-run). Any other bad line is a
    DataError naming it."""
    from cotrain.errors import DataError

    lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    kept = []
    for n, line in enumerate(lines, 1):
        try:
            step = json.loads(line)["step"]
            if not isinstance(step, int):
                raise TypeError(step)
        except (ValueError, KeyError, TypeError):
            if n == len(lines):
                break
            raise DataError(path, f"line {n} is not a metrics row (JSON object with an integer 'step')") from None
        if step < start_step:
            kept.append(line)
    return kept


def _clean(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become null (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _flatten(row: dict[str, Any], prefix: str = "") -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for key, value in row.items():
        if key == "step":
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out += _flatten(value, name + "/")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out.append((name, float(value)))
    return out
