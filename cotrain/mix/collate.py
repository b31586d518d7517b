"""Collate processed samples of mixed sources into one padded batch of tensors.

Shapes (B = per-rank batch, C = camera slots, S = image side, Ds/Da = max state/action dims, H = horizon):
images uint8 [B, C, 3, S, S] + camera_mask bool [B, C]; state f32 [B, Ds] + state_mask [B, Ds];
actions f32 [B, H, Da] + action_mask bool [B, Da] + actions_valid bool [B, H]; has_actions bool [B];
action_tokens int64 [B, L] + action_tokens_mask [B, L]; source int64 [B]; loss_weight f32 [B];
text fields (instruction, prompt, target, conversation), modality, embodiment and key as lists.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np

from cotrain.mix.normalize import StatsNormalizer

if TYPE_CHECKING:
    import torch

TEXT_FIELDS = ("instruction", "prompt", "target", "conversation", "modality", "embodiment", "key")
A = TypeVar("A")  # the array type of a batch's fields: numpy in `BatchArrays`, torch in `Batch`


@dataclass
class _BatchFields(Generic[A]):
    """The fields every form of a collated batch has (shapes in the module docstring)."""

    camera_mask: A  # bool [B, C]
    state: A  # f32 [B, Ds], in model units
    state_mask: A  # bool [B, Ds]
    actions: A  # f32 [B, H, Da], in model units
    action_mask: A  # bool [B, Da]
    actions_valid: A  # bool [B, H]
    has_actions: A  # bool [B]
    source: A  # int64 [B]: the source id (`Mixture.sources` order)
    loss_weight: A  # f32 [B]
    skipped: A  # int64 [B]: bad samples replaced to fill the row
    action_tokens: A  # int64 [B, L]
    action_tokens_mask: A  # bool [B, L]
    instruction: list[str | None]
    prompt: list[str | None]
    target: list[str | None]
    conversation: list[Any]
    modality: list[str]
    embodiment: list[str]
    key: list[str]


@dataclass
class BatchArrays(_BatchFields[np.ndarray]):
    """A batch before `to_tensors`: numpy arrays, images a uint8 tensor [B, C, S, S, 3] in this
    process, or in a DataLoader worker the `ring.RingSlot` its images were written to."""

    images: Any = None


@dataclass
class Batch(_BatchFields["torch.Tensor"]):
    """One per-rank batch of tensors, what `MixtureLoader` yields and `Collator(samples)` returns.

    Read fields as attributes. `batch["state"]`, `"state" in batch`, `batch.get(...)` and `keys()`
    still work for consumers written against the dict this replaced (`model.inputs.build_inputs`)."""

    images: torch.Tensor | None = None  # uint8 [B, C, 3, S, S]
    step: int | None = None  # the optimiser step it belongs to (None: not from a loader)

    def __getitem__(self, name: str) -> Any:
        if name not in _BATCH_NAMES:
            raise KeyError(name)
        return getattr(self, name)

    def __contains__(self, name: object) -> bool:
        return name in _BATCH_NAMES

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self, name) if name in _BATCH_NAMES else default

    def keys(self) -> Iterator[str]:
        return iter(_BATCH_NAMES)


_BATCH_NAMES = tuple(f.name for f in fields(Batch))


@dataclass
class BatchRows:
    """A batch under construction: every field preallocated, row i written in place by
    `SampleTransform.into` (the loader's path: no per-sample dicts, no second copy of anything).
    Padding is 0 / False; images are written whole (every camera slot) by the transform."""

    images_t: Any  # torch uint8 [B, C, S, S, 3] sharing `images`' memory, or None (a ring buffer)
    images: np.ndarray  # uint8 [B, C, S, S, 3]
    camera_mask: np.ndarray  # bool [B, C]
    state: np.ndarray  # f32 [B, Ds]
    state_mask: np.ndarray  # bool [B, Ds]
    actions: np.ndarray  # f32 [B, H, Da]
    action_mask: np.ndarray  # bool [B, Da]
    actions_valid: np.ndarray  # bool [B, H]
    source: np.ndarray  # int64 [B]
    loss_weight: np.ndarray  # f32 [B]
    skipped: np.ndarray  # int64 [B]
    action_tokens: list[np.ndarray | None]
    text: dict[str, list[Any]]  # TEXT_FIELDS -> one entry per row

    def clear_row(self, i: int) -> None:
        """Back to padding, after a failed sample wrote part of row i (its replacement may write less)."""
        for a in (self.camera_mask, self.state, self.state_mask, self.actions, self.action_mask, self.actions_valid):
            a[i] = 0
        self.action_tokens[i] = None


@dataclass(frozen=True)
class Collator:
    """Pads to fixed sizes so every batch of a run has the same tensor shapes."""

    max_cameras: int
    image_size: int
    state_dim: int
    action_dim: int
    horizon: int

    def __call__(self, samples: Sequence[dict[str, Any]]) -> Batch:
        """The padded batch as tensors (shapes in the module docstring)."""
        return to_tensors(self.arrays(samples))

    def image_buffer(self, batch: int, zeroed: bool = True) -> tuple[Any, np.ndarray]:
        """The images of a batch of `batch` samples: a uint8 tensor [B, C, S, S, 3] and its numpy view.

        `zeroed=False` skips clearing 150 KB per camera slot, for a caller that writes every slot
        (`SampleTransform.into` does)."""
        import torch

        shape = (batch, self.max_cameras, self.image_size, self.image_size, 3)
        array = np.zeros(shape, np.uint8) if zeroed else np.empty(shape, np.uint8)
        return torch.from_numpy(array), array

    def rows(self, batch: int, images: tuple[Any, np.ndarray] | None = None) -> BatchRows:
        """An empty batch of `batch` rows to write samples into; `images` (tensor or None, array
        [B, C, S, S, 3]) is where they go, by default a new uncleared buffer (every slot is written)."""
        images_t, array = images if images is not None else self.image_buffer(batch, zeroed=False)
        b, c, h, d = batch, self.max_cameras, self.horizon, self.action_dim
        return BatchRows(
            images_t, array, np.zeros((b, c), bool), np.zeros((b, self.state_dim), np.float32),
            np.zeros((b, self.state_dim), bool), np.zeros((b, h, d), np.float32), np.zeros((b, d), bool),
            np.zeros((b, h), bool), np.zeros(b, np.int64), np.zeros(b, np.float32), np.zeros(b, np.int64),
            [None] * b, {field: [None] * b for field in TEXT_FIELDS})

    def finish(self, rows: BatchRows,
               normalizers: Sequence[tuple[StatsNormalizer | None, StatsNormalizer | None]] | None = None,
               ) -> BatchArrays:
        """The written rows as the `arrays` form (numpy arrays, images a tensor or a ring buffer's
        None); `normalizers` ((state, actions) per source id) maps raw state and actions to model
        units, one source at a time.

        DataLoader workers return this form, their images left in a shared buffer (ring.py) and the
        small arrays pickled inline. A tensor per field instead costs each batch 13 shared-memory
        segments and file-descriptor handshakes (measured: 8 ms of CPU per batch of 32 against under
        3 ms), and a numpy-backed tensor is copied into shared memory by the queue's feeder thread,
        where a worker stopped mid-send (loop left early) could die with SIGABRT."""
        if normalizers is not None:
            _normalize(rows.source, rows.state, rows.actions, normalizers)
        tokens, tokens_mask = _tokens(rows.action_tokens)
        return BatchArrays(
            images=rows.images_t, camera_mask=rows.camera_mask, state=rows.state, state_mask=rows.state_mask,
            actions=rows.actions, action_mask=rows.action_mask, actions_valid=rows.actions_valid,
            has_actions=np.asarray(rows.action_mask.any(axis=1)), source=rows.source, loss_weight=rows.loss_weight,
            skipped=rows.skipped, action_tokens=tokens, action_tokens_mask=tokens_mask, **rows.text)

    def arrays(self, samples: Sequence[dict[str, Any]]) -> BatchArrays:
        """The batch before `to_tensors` (numpy arrays, images a tensor [B, C, S, S, 3]) from processed
        samples (`SampleTransform(sample)` dicts, already normalised)."""
        rows = self.rows(len(samples), self.image_buffer(len(samples)))  # zeroed: only present cameras are copied
        for i, smp in enumerate(samples):
            c = min(len(smp["images"]), self.max_cameras)
            rows.images[i, :c] = smp["images"][:c]
            rows.camera_mask[i, :c] = smp["camera_present"][:c]
            ds, da = len(smp["state"]), smp["actions"].shape[1]
            rows.state[i, :ds], rows.state_mask[i, :ds] = smp["state"], True
            if da:
                rows.actions[i, :, :da], rows.action_mask[i, :da] = smp["actions"], True
                rows.actions_valid[i] = smp["actions_valid"]
            rows.source[i], rows.loss_weight[i], rows.skipped[i] = (
                smp["source"],
                smp["loss_weight"],
                smp.get("skipped", 0),
            )
            rows.action_tokens[i] = smp.get("action_tokens")
            for field in TEXT_FIELDS:
                rows.text[field][i] = smp.get(field)
        return self.finish(rows)


def _normalize(source: np.ndarray, state: np.ndarray, actions: np.ndarray,
               normalizers: Sequence[tuple[StatsNormalizer | None, StatsNormalizer | None]]) -> None:
    """In place: each source's rows of state [B, Ds] and actions [B, H, Da] through its normalizers,
    over the source's own leading dims (padding stays 0)."""
    for s in np.unique(source).tolist():
        rows = np.flatnonzero(source == s)
        state_norm, action_norm = normalizers[s]
        if state_norm is not None:
            d = len(state_norm.offset)
            state[rows, :d] = state_norm(state[rows, :d])
        if action_norm is not None:
            d = len(action_norm.offset)
            actions[rows, :, :d] = action_norm(actions[rows, :, :d])


def to_tensors(arrays: BatchArrays, step: int | None = None) -> Batch:
    """`Collator.arrays` output -> the batch of tensors: arrays wrapped without copying, images
    permuted to [B, C, 3, S, S] (a view)."""
    import torch

    values = {f.name: getattr(arrays, f.name) for f in fields(arrays)}
    out = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in values.items()}
    out["images"] = out["images"].permute(0, 1, 4, 2, 3)
    return Batch(**out, step=step)  # type: ignore[arg-type]  # (per name the right type; ** sees their union)


def _tokens(tokens: Sequence[np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
    """Action token ids int64 [B, L] and their mask [B, L], L the longest row's count."""
    length = max((len(t) for t in tokens if t is not None), default=0)
    ids = np.zeros((len(tokens), length), np.int64)
    mask = np.zeros((len(tokens), length), bool)
    for i, tok in enumerate(tokens):
        if tok is not None:
            ids[i, : len(tok)], mask[i, : len(tok)] = tok, True
    return ids, mask
