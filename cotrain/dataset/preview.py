"""Render a PNG contact sheet of a few samples: every camera, the text, and one action chunk each.

One row per sample: its camera images side by side, a text panel (key, episode and frame, then
instruction / prompt / target / conversation, wrapped), and for samples with actions a plot of the
chunk, one line per action dimension over the horizon, with steps whose `actions_valid` is False
shaded and drawn in grey. Samples are chosen by `numpy.random.default_rng(seed)` over the manifest's
global sample order and read by random access (a shard's member index, then one ranged read per
sample; local or at an fsspec URL), so the same seed gives the same samples and, with the PNG's
Software tag dropped, the same bytes.
matplotlib is used through its object API on the Agg canvas: no pyplot, no global backend switch.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cotrain.dataset import keys
from cotrain.dataset.manifest import Manifest
from cotrain.dataset.storage import StorageOptions, read_manifest
from cotrain.errors import ConfigError, DataError

__all__ = ["PreviewResult", "choose_samples", "render_preview"]

_CELL_IN = 2.4  # inches per row and per image column; text and action columns are wider
_TITLE_IN = 0.6  # inches above the first row for the figure title and the first row's titles
_TEXT_WIDTH_CHARS = 44
_MAX_TEXT_LINES = 14
_DPI = 100
_HINT = "free some space and run the command again"
# tab20 without its two greys (grey means "invalid" here): the saturated colours first, then the light ones.
_PALETTE = (0, 2, 4, 6, 8, 10, 12, 16, 18, 1, 3, 5, 7, 9, 11, 13, 17, 19)


@dataclass(frozen=True)
class PreviewResult:
    """What `render_preview` wrote: the file, the sample keys shown (top to bottom), pixel size."""

    path: Path
    keys: list[str]
    width_px: int
    height_px: int


def choose_samples(num_samples: int, count: int, seed: int) -> list[int]:
    """`count` distinct global sample indices (ascending), a pure function of the arguments."""
    if count <= 0:
        raise ConfigError(f"--samples {count}: must be at least 1")
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(num_samples, size=min(count, num_samples), replace=False))


def _load_samples(root: str, manifest: Manifest, indices: Sequence[int],
                  options: StorageOptions | None) -> list[dict[str, Any]]:
    """Read the samples at global `indices` as the mixture loader does (cotrain/dataset/reader.py): each
    shard's member index (its sidecar, else a header scan), then one ranged read per sample."""
    from cotrain.dataset.reader import SourceReader

    reader = SourceReader(root, manifest, options)
    try:
        raws = [reader.read_raw(i) for i in indices]
    except DataError as exc:
        raise DataError(exc.file, f"{exc.problem}; run `cotrain validate` for details") from None
    return [_decode(root, raw) for raw in raws]


def _decode(root: str, raw: dict[str, Any]) -> dict[str, Any]:
    from cotrain.dataset.shards import decode_sample

    try:
        return decode_sample(raw)
    except ValueError as exc:  # a damaged npy/json/txt member: name the shard, the sample and the member
        raise DataError(f"{root.rstrip('/')}/{raw['__shard__']}",
                        f"sample {raw['__key__']}, {exc}; run `cotrain validate` for every problem") from None


def _wrap(label: str, text: str) -> list[str]:
    return textwrap.wrap(f"{label}: {text}", _TEXT_WIDTH_CHARS, subsequent_indent="  ") or [f"{label}:"]


def _sample_text(sample: dict[str, Any]) -> str:
    raw_meta = sample.get(keys.META)
    meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    lines = [f"{sample['__key__']}  ({sample['__shard__']})"]
    if "episode" in meta:
        lines.append(f"episode {meta['episode']}, frame {meta.get('frame_index', '?')}")
    for label, member in (("instruction", keys.INSTRUCTION), ("prompt", keys.PROMPT), ("target", keys.TARGET)):
        if isinstance(sample.get(member), str):
            lines += _wrap(label, sample[member].strip() or "(empty)")
    tokens = sample.get(keys.ACTION_TOKENS)
    if isinstance(tokens, np.ndarray):
        shown = " ".join(str(t) for t in tokens.ravel()[:48]) + (" …" if tokens.size > 48 else "")
        lines += _wrap(f"action tokens ({tokens.size})", shown)
    turns = sample.get(keys.CONVERSATION)
    for turn in turns if isinstance(turns, list) else []:
        if isinstance(turn, dict):
            role = turn.get("role", turn.get("from", "?"))
            lines += _wrap(str(role), str(turn.get("content", turn.get("value", ""))))
    if len(lines) > _MAX_TEXT_LINES:
        lines = lines[: _MAX_TEXT_LINES - 1] + ["…"]
    return "\n".join(lines)


def _images(sample: dict[str, Any], cameras: Sequence[str]) -> list[tuple[str, bytes]]:
    """Manifest cameras first (in manifest order), then any other JPEG member of the sample."""
    named = [keys.camera_member(c) for c in cameras]
    others = sorted(k for k in sample if k.endswith(keys.IMAGE_EXT) and k not in named)
    return [(ext, sample[ext]) for ext in named + others if isinstance(sample.get(ext), bytes)]


def _draw_image(ax: Any, name: str, data: bytes) -> None:
    from cotrain.media.image import decode_image

    ax.set_axis_off()
    ax.set_title(name.removesuffix(keys.IMAGE_EXT), fontsize=8)
    try:
        ax.imshow(decode_image(data), interpolation="bilinear")
    except (OSError, ValueError) as exc:
        ax.text(0.5, 0.5, f"cannot decode:\n{exc}"[:120], ha="center", va="center", fontsize=7, wrap=True)


def _draw_actions(ax: Any, actions: np.ndarray, valid: np.ndarray | None) -> None:
    """One line per dimension; invalid steps shaded, and their part of each line drawn grey."""
    from matplotlib import colormaps

    horizon, dims = actions.shape
    steps = np.arange(horizon)
    valid = np.ones(horizon, bool) if valid is None or valid.shape != (horizon,) else valid.astype(bool)
    for h in np.flatnonzero(~valid):
        ax.axvspan(h - 0.5, h + 0.5, color="0.9", lw=0)
    palette = [colormaps["tab20"](i) for i in _PALETTE]
    # The grey part also covers the valid steps next to an invalid run, so the two parts join.
    grey = ~valid | np.append(~valid[1:], False) | np.insert(~valid[:-1], 0, False)
    marker = "." if valid.sum() < 2 else None  # a single valid step would otherwise be invisible
    if grey.any():  # all grey parts first, so no dimension's grey covers another's colour
        ax.plot(steps, np.where(grey[:, None], actions, np.nan), color="0.6", lw=1)
    for d in range(dims):
        ax.plot(steps, np.where(valid, actions[:, d], np.nan), color=palette[d % len(palette)], lw=1.2, marker=marker)
    ax.set_xlim(-0.5, horizon - 0.5)
    ax.set_title(f"action chunk [{horizon}x{dims}], grey = invalid", fontsize=8)
    ax.set_xlabel("step", fontsize=7)
    ax.tick_params(labelsize=6)


def _layout(samples: Sequence[dict[str, Any]], cameras: Sequence[str]) -> tuple[int, bool]:
    num_images = max((len(_images(s, cameras)) for s in samples), default=0)
    has_actions = any(isinstance(s.get(keys.ACTIONS), np.ndarray) and s[keys.ACTIONS].ndim == 2 for s in samples)
    return num_images, has_actions


def _draw(samples: Sequence[dict[str, Any]], manifest: Manifest) -> Any:
    from matplotlib.figure import Figure

    num_images, has_actions = _layout(samples, manifest.cameras)
    ratios = [1.0] * num_images + [1.5] + ([1.7] if has_actions else [])
    height_in = _CELL_IN * len(samples) + _TITLE_IN + 0.2
    fig = Figure(figsize=(_CELL_IN * sum(ratios), height_in), dpi=_DPI)
    fig.suptitle(f"{manifest.name} ({manifest.modality}, {manifest.num_samples} samples)", fontsize=10,
                 y=1 - 0.15 / height_in, va="top")
    grid = fig.add_gridspec(len(samples), len(ratios), width_ratios=ratios, left=0.02, right=0.98,
                            top=1 - _TITLE_IN / height_in, bottom=0.45 / height_in, wspace=0.15, hspace=0.35)
    for row, sample in enumerate(samples):
        images = _images(sample, manifest.cameras)
        for col in range(num_images):
            ax = fig.add_subplot(grid[row, col])
            if col < len(images):
                _draw_image(ax, *images[col])
            else:
                ax.set_axis_off()
        text_ax = fig.add_subplot(grid[row, num_images])
        text_ax.set_axis_off()
        text_ax.text(0.0, 1.0, _sample_text(sample), va="top", ha="left", fontsize=7,
                     transform=text_ax.transAxes)
        actions = sample.get(keys.ACTIONS)
        if has_actions:
            ax = fig.add_subplot(grid[row, num_images + 1])
            if isinstance(actions, np.ndarray) and actions.ndim == 2:
                _draw_actions(ax, actions, sample.get(keys.ACTIONS_VALID))
            else:
                ax.set_axis_off()
    return fig


def _check_out(out: Path) -> None:
    """Refuse, before any work, an `--out` that cannot become a PNG file."""
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give the PNG's file name (e.g. {out / 'preview.png'})")
    blocker = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise ConfigError(f"--out {out}: {blocker} is a file, not a folder")


def render_preview(root: str | Path, out: str | Path, *, samples: int = 4, seed: int = 0,
                   storage_options: StorageOptions | None = None) -> PreviewResult:
    """Write a PNG preview of `samples` samples of the dataset at `root` (a folder or fsspec URL) to
    `out`, atomically."""
    import io

    from cotrain.atomic import write_bytes_atomic, writing

    root, out = str(root), Path(out)
    _check_out(out)
    manifest = read_manifest(root, storage_options)
    if manifest.num_samples == 0:
        raise DataError(root, "dataset has no samples to preview")
    chosen = _load_samples(root, manifest, choose_samples(manifest.num_samples, samples, seed), storage_options)
    fig = _draw(chosen, manifest)
    buf = io.BytesIO()
    # No Software tag (it names the matplotlib version), so equal inputs give equal bytes.
    fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
    with writing(out.parent, _HINT):
        out.parent.mkdir(parents=True, exist_ok=True)  # a new folder is what `--out runs/x/preview.png` means
    write_bytes_atomic(out, buf.getvalue(), _HINT)
    width, height = fig.canvas.get_width_height()
    return PreviewResult(path=out, keys=[s["__key__"] for s in chosen], width_px=width, height_px=height)
