"""Collate processed samples of mixed sources into one padded batch of tensors.

Shapes (B = per-rank batch, C = camera slots, S = image side, Ds/Da = max state/action dims, H = horizon):
images uint8 [B, C, 3, S, S] + camera_mask bool [B, C]; state f32 [B, Ds] + state_mask [B, Ds];
actions f32 [B, H, Da] + action_mask bool [B, Da] + actions_valid bool [B, H]; has_actions bool [B];
action_tokens int64 [B, L] + action_tokens_mask [B, L]; source int64 [B]; loss_weight f32 [B];
text fields (instruction, prompt, target, conversation), modality, embodiment and key as lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cotrain.mix.transform import Normalizer

TEXT_FIELDS = ("instruction", "prompt", "target", "conversation", "modality", "embodiment", "key")


@dataclass(frozen=True)
class Collator:
    """Pads to fixed sizes so every batch of a run has the same tensor shapes."""

    max_cameras: int
    image_size: int
    state_dim: int
    action_dim: int
    horizon: int

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """The padded batch as tensors (shapes in the module docstring)."""
        return to_tensors(self.arrays(samples))

    def image_buffer(self, batch: int) -> tuple[Any, np.ndarray]:
        """The images of a batch of `batch` samples: a zeroed uint8 tensor [B, C, S, S, 3] and its numpy view."""
        import torch

        array = np.zeros((batch, self.max_cameras, self.image_size, self.image_size, 3), np.uint8)
        return torch.from_numpy(array), array

    def arrays(self, samples: Sequence[dict[str, Any]], images: tuple[Any, np.ndarray] | None = None,
               normalizers: Sequence[tuple[Normalizer | None, Normalizer | None]] | None = None) -> dict[str, Any]:
        """The batch before `to_tensors`: numpy arrays, and the images as a tensor [B, C, S, S, 3].

        `images` is (tensor or None, array) the samples were already decoded into (row i = sample i,
        `SampleTransform(sample, images=row)`, every slot written); without it the samples' images are
        copied into a new `image_buffer`. `normalizers` ((state, actions) per source id) normalises
        samples made with `SampleTransform(..., normalize=False)` here, one source at a time.

        The DataLoader workers return this form, their images left in a shared buffer (ring.py) and
        the small arrays pickled inline. A tensor per field instead costs each batch 13 shared-memory
        segments and file-descriptor handshakes (measured: 8 ms of CPU per batch of 32 against under
        3 ms), and a numpy-backed tensor is copied into shared memory by the queue's feeder thread,
        where a worker stopped mid-send (loop left early) could die with SIGABRT.
        """
        b, placed = len(samples), images is not None
        images_t, images = images if images is not None else self.image_buffer(b)
        cam_mask = np.zeros((b, self.max_cameras), bool)
        state = np.zeros((b, self.state_dim), np.float32)
        state_mask = np.zeros((b, self.state_dim), bool)
        actions = np.zeros((b, self.horizon, self.action_dim), np.float32)
        action_mask = np.zeros((b, self.action_dim), bool)
        valid = np.zeros((b, self.horizon), bool)
        for i, smp in enumerate(samples):
            c = min(len(smp["images"]), self.max_cameras)
            cam_mask[i, :c] = smp["camera_present"][:c]
            if not placed:
                images[i, :c] = smp["images"][:c]
            ds, da = len(smp["state"]), smp["actions"].shape[1]
            state[i, :ds], state_mask[i, :ds] = smp["state"], True
            if da:
                actions[i, :, :da], action_mask[i, :da], valid[i] = smp["actions"], True, smp["actions_valid"]
        source = np.array([smp["source"] for smp in samples], np.int64)
        if normalizers is not None:
            _normalize(source, state, actions, normalizers)
        batch: dict[str, Any] = {
            "images": images_t,
            "camera_mask": cam_mask,
            "state": state,
            "state_mask": state_mask,
            "actions": actions,
            "action_mask": action_mask,
            "actions_valid": valid,
            "has_actions": action_mask.any(axis=1),
            "source": source,
            "loss_weight": np.array([smp["loss_weight"] for smp in samples], np.float32),
            "skipped": np.array([smp.get("skipped", 0) for smp in samples], np.int64),
        }
        batch.update(_tokens(samples))
        for field in TEXT_FIELDS:
            batch[field] = [smp.get(field) for smp in samples]
        return batch


def _normalize(source: np.ndarray, state: np.ndarray, actions: np.ndarray,
               normalizers: Sequence[tuple[Normalizer | None, Normalizer | None]]) -> None:
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


def to_tensors(batch: dict[str, Any]) -> dict[str, Any]:
    """`Collator.arrays` output -> the batch of tensors: arrays wrapped without copying, images
    permuted to [B, C, 3, S, S] (a view)."""
    import torch

    out = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in batch.items()}
    out["images"] = out["images"].permute(0, 1, 4, 2, 3)
    return out


def _tokens(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    length = max((len(t) for t in (s.get("action_tokens") for s in samples) if t is not None), default=0)
    ids = np.zeros((len(samples), length), np.int64)
    mask = np.zeros((len(samples), length), bool)
    for i, smp in enumerate(samples):
        tok = smp.get("action_tokens")
        if tok is not None:
            ids[i, : len(tok)], mask[i, : len(tok)] = tok, True
    return {"action_tokens": ids, "action_tokens_mask": mask}
