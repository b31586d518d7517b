"""Per-sample processing in the loader: JPEG -> letterboxed image, state and actions padded to the
horizon, normalised with the source's own stats (normalize.py).

Missing stats for a source that has state or actions are an error, never a silent identity.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from cotrain.dataset import keys
from cotrain.dataset.manifest import Manifest
from cotrain.errors import ConfigError, DataError
from cotrain.mix.collate import BatchRows, Collator
from cotrain.mix.normalize import StatsNormalizer, build_normalizer

__all__ = ["ImageJob", "StatsNormalizer", "SampleTransform", "build_normalizer", "letterbox_jpeg"]

ImageJob = tuple[bytes, np.ndarray]  # a camera's JPEG and the [S, S, 3] batch slot it decodes into


def letterbox_jpeg(data: bytes, side: int, out: np.ndarray | None = None) -> np.ndarray:
    """Decode an image and fit it into a side x side uint8 RGB canvas, centred, keeping aspect ratio.

    `out` (optional, [side, side, 3] uint8) is drawn into and returned instead of a new canvas, so a
    caller stacking several cameras saves one 150 KB buffer and copy per image (at 224).
    """
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        img.draft("RGB", (side, side))  # JPEG DCT-domain downscale: decodes big images much faster
        img = img.convert("RGB")
        w, h = img.size
        scale = side / max(w, h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        if (nw, nh) != (w, h):
            img = img.resize((nw, nh), Image.Resampling.BILINEAR)
        if out is None:
            canvas = np.zeros((side, side, 3), np.uint8)
        else:
            canvas = out
            if (nw, nh) != (side, side):
                canvas.fill(0)
        top, left = (side - nh) // 2, (side - nw) // 2
        canvas[top: top + nh, left: left + nw] = np.asarray(img)
    return canvas


@dataclass(frozen=True)
class SampleTransform:
    """Turns one decoded sample of one source into model-ready numpy arrays and text."""

    source: int
    name: str
    manifest: Manifest
    image_size: int
    horizon: int
    loss_weight: float
    state_norm: StatsNormalizer | None
    action_norm: StatsNormalizer | None

    @classmethod
    def build(cls, source: int, name: str, manifest: Manifest, *, image_size: int, horizon: int, loss_weight: float,
              normalization: str, floor: float, clip: float) -> SampleTransform:
        st, ac = manifest.stats.state, manifest.stats.actions
        if manifest.state_names and st is None or manifest.action_names and ac is None:
            raise ConfigError(f"source {name!r}: manifest has state/action names but no stats; reconvert it")
        return cls(source, name, manifest, image_size, horizon, loss_weight,
                   build_normalizer(st, normalization, floor, clip, "state"),
                   build_normalizer(ac, normalization, floor, clip, "actions"))

    def __call__(self, sample: Mapping[str, Any], images: np.ndarray | None = None) -> dict[str, Any]:
        """The processed sample on its own, normalised: images [C, S, S, 3] of the source's C cameras
        (drawn into `images`, e.g. a row of a batch buffer, when given), camera_present, state [Ds],
        actions [H, Da] and actions_valid [H] of the source's own sizes, text and ids."""
        cams, ds, da = len(self.manifest.cameras), self._dim(self.state_norm), self._dim(self.action_norm)
        collator = Collator(max_cameras=cams if images is None else len(images), image_size=self.image_size,
                            state_dim=ds, action_dim=da, horizon=self.horizon)
        rows = collator.rows(1, None if images is None else (None, images[None]))
        self.into(sample, rows, 0)
        # A sample without state or actions keeps 0 dims of them (as its masks say), whatever the stats.
        state = rows.state[0, : int(rows.state_mask[0].sum())]
        actions = rows.actions[0, :, : int(rows.action_mask[0].sum())]
        if self.state_norm is not None and len(state):
            state = self.state_norm(state)
        if self.action_norm is not None and actions.shape[1]:
            actions = self.action_norm(actions)
        out: dict[str, Any] = {
            "images": rows.images[0, :cams], "camera_present": rows.camera_mask[0, :cams], "source": self.source,
            "loss_weight": self.loss_weight, "state": state, "actions": actions,
            "actions_valid": rows.actions_valid[0], "action_tokens": rows.action_tokens[0],
        }
        out.update({field: values[0] for field, values in rows.text.items()})
        return out

    @cached_property  # (a frozen dataclass still has a __dict__ for cached_property to fill)
    def _camera_members(self) -> tuple[str, ...]:
        return tuple(keys.camera_member(c) for c in self.manifest.cameras)

    @cached_property
    def members(self) -> frozenset[str]:
        """The sample members `into` reads (anything else in a shard need not be decoded)."""
        return frozenset({*self._camera_members, keys.STATE, keys.ACTIONS, keys.ACTIONS_VALID, keys.ACTION_TOKENS,
                          *(member for _, member in _TEXT_MEMBERS)})

    @staticmethod
    def _dim(norm: StatsNormalizer | None) -> int:
        return 0 if norm is None else len(norm.offset)

    def into(self, sample: Mapping[str, Any], rows: BatchRows, i: int, jobs: list[ImageJob] | None = None) -> None:
        """Write the sample into row i of a batch: every camera slot of `rows.images[i]` (absent cameras
        and spare slots zeroed, so the buffer need not be cleared), state and actions in raw units
        (the batch is normalised per source in `Collator.finish`), masks, text and ids. With `jobs`,
        the JPEGs are not decoded here but listed there with their slots, for the caller to decode
        (`letterbox_jpeg(data, side, out=slot)`). On an error the row may be partly written
        (`BatchRows.clear_row`)."""
        members = self._camera_members
        present = [m in sample for m in members]
        complete = all(present)
        # Robot samples carry every camera; image-text samples may hold fewer images than the dataset's most.
        if not complete and self.manifest.modality in (keys.ROBOT, keys.HUMAN_VIDEO):
            missing = self.manifest.cameras[present.index(False)]
            raise DataError(sample.get("__shard__", "?"), f"sample {sample.get('__key__')} lacks camera {missing!r}")
        images = rows.images[i]
        for c in range(len(images)):
            if c < len(members) and present[c]:
                if jobs is None:
                    letterbox_jpeg(sample[members[c]], self.image_size, out=images[c])
                else:
                    jobs.append((sample[members[c]], images[c]))
            else:
                images[c] = 0
        n = min(len(members), len(images))
        rows.camera_mask[i, :n] = True if complete else present[:n]
        self._lowdim_into(sample, rows, i)
        rows.source[i], rows.loss_weight[i] = self.source, self.loss_weight
        tokens = sample.get(keys.ACTION_TOKENS)
        rows.action_tokens[i] = None if tokens is None else np.asarray(tokens, np.int64)
        text = rows.text
        text["modality"][i], text["embodiment"][i] = self.manifest.modality, self.manifest.embodiment or ""
        text["key"][i] = sample.get("__key__", "")
        for field, member in _TEXT_MEMBERS:
            text[field][i] = sample.get(member)

    def _bad(self, sample: Mapping[str, Any], member: str, problem: str) -> DataError:
        return DataError(sample.get("__shard__", "?"), f"sample {sample.get('__key__')}: {problem}", key=member)

    def _checked(
        self, sample: Mapping[str, Any], member: str, ndim: int, dims: tuple[int | None, ...]
    ) -> np.ndarray | None:
        """The member as a finite float array of the manifest's shape (None: absent), else a DataError
        naming shard, sample and member: what `cotrain validate` rejects is never trained on."""
        value = sample.get(member)
        if value is None:
            return None
        array = value if isinstance(value, np.ndarray) else np.asarray(value)
        shape = array.shape  # (compared dim by dim: this runs for every sample)
        if len(shape) != ndim or dims[0] is not None and shape[0] != dims[0] or ndim == 2 and shape[1] != dims[1]:
            want = "(" + ", ".join("*" if d is None else str(d) for d in dims) + ("," if ndim == 1 else "") + ")"
            raise self._bad(sample, member, f"shape {tuple(shape)}, the manifest says {want}")
        kind = array.dtype.kind
        if kind not in "fiub":
            raise self._bad(sample, member, f"dtype {array.dtype}, expected numbers")
        # (sum is finite iff every value is, barring an overflow to inf, which the slow path then sorts out)
        if kind == "f" and not np.isfinite(array.sum()) and not np.isfinite(array).all():
            at = tuple(int(j) for j in np.argwhere(~np.isfinite(array))[0])
            kind = "NaN" if np.isnan(array[at]) else "Inf"
            raise self._bad(sample, member, f"{kind} at index {list(at)} ({int((~np.isfinite(array)).sum())} of "
                                            f"{array.size} values not finite)")
        return array

    def _lowdim_into(self, sample: Mapping[str, Any], rows: BatchRows, i: int) -> None:
        m = self.manifest
        state = self._checked(sample, keys.STATE, 1, (len(m.state_names),))
        actions = self._checked(sample, keys.ACTIONS, 2, (m.horizon, len(m.action_names)))
        valid = self._checked(sample, keys.ACTIONS_VALID, 1, (None if actions is None else len(actions),))
        if actions is not None and not len(actions):
            raise self._bad(sample, keys.ACTIONS, "an empty action chunk")
        robot_like = m.modality in (keys.ROBOT, keys.HUMAN_VIDEO)  # (as `cotrain validate` requires)
        for member, value, required in ((keys.STATE, state, robot_like or bool(m.state_names)),
                                        (keys.ACTIONS, actions, robot_like or bool(m.action_names)),
                                        (keys.ACTIONS_VALID, valid, actions is not None)):
            if value is None and required:
                raise self._bad(sample, member, "missing")
        if state is not None and self.state_norm is not None:
            d = len(state)
            rows.state[i, :d], rows.state_mask[i, :d] = state, True
        if actions is None or self.action_norm is None:
            return
        chunk = actions[: self.horizon]
        n, d = chunk.shape
        rows.actions[i, :n, :d], rows.action_mask[i, :d] = chunk, True
        if n < self.horizon:  # a chunk cut short by the episode's end repeats its last action (invalid steps)
            rows.actions[i, n:, :d] = chunk[-1]
        rows.actions_valid[i, :n] = True if valid is None else valid.astype(bool)[:n]


_TEXT_MEMBERS = (("instruction", keys.INSTRUCTION), ("prompt", keys.PROMPT), ("target", keys.TARGET),
                 ("conversation", keys.CONVERSATION))
