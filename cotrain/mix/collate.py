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
        from torch.utils.data import get_worker_info

        b, s, shared = len(samples), self.image_size, get_worker_info() is not None
        images_t, images = _buffer((b, self.max_cameras, s, s, 3), np.uint8, shared)
        cam_mask_t, cam_mask = _buffer((b, self.max_cameras), np.bool_, shared)
        state_t, state = _buffer((b, self.state_dim), np.float32, shared)
        state_mask_t, state_mask = _buffer((b, self.state_dim), np.bool_, shared)
        actions_t, actions = _buffer((b, self.horizon, self.action_dim), np.float32, shared)
        action_mask_t, action_mask = _buffer((b, self.action_dim), np.bool_, shared)
        valid_t, valid = _buffer((b, self.horizon), np.bool_, shared)
        for i, smp in enumerate(samples):
            c = min(len(smp["images"]), self.max_cameras)
            images[i, :c], cam_mask[i, :c] = smp["images"][:c], smp["camera_present"][:c]
            if c < self.max_cameras:
                images[i, c:] = 0  # shared buffers are not zeroed up front: only the padding is
            ds, da = len(smp["state"]), smp["actions"].shape[1]
            state[i, :ds], state_mask[i, :ds] = smp["state"], True
            if da:
                actions[i, :, :da], action_mask[i, :da], valid[i] = smp["actions"], True, smp["actions_valid"]
        batch: dict[str, Any] = {
            "images": images_t.permute(0, 1, 4, 2, 3),
            "camera_mask": cam_mask_t,
            "state": state_t,
            "state_mask": state_mask_t,
            "actions": actions_t,
            "action_mask": action_mask_t,
            "actions_valid": valid_t,
            "has_actions": _filled(action_mask.any(axis=1), shared),
            "source": _filled(np.array([smp["source"] for smp in samples], np.int64), shared),
            "loss_weight": _filled(np.array([smp["loss_weight"] for smp in samples], np.float32), shared),
            "skipped": _filled(np.array([smp.get("skipped", 0) for smp in samples], np.int64), shared),
        }
        batch.update(_tokens(samples, shared))
        for field in TEXT_FIELDS:
            batch[field] = [smp.get(field) for smp in samples]
        return batch


def _buffer(shape: tuple[int, ...], dtype: type, shared: bool) -> tuple[Any, np.ndarray]:
    """A tensor and a numpy view of it to fill in. Zeroed, except a shared one's images (see the caller).

    Inside a DataLoader worker (`shared`) the tensor lives in shared memory from the start, as torch's
    default_collate does: sending the batch then passes a handle. A numpy-backed tensor would instead be
    copied into shared memory by the queue's feeder thread, which costs a copy of every batch and lets
    a worker that is stopped mid-send (the loop left early) die with SIGABRT ("terminate called without
    an active exception"), which the DataLoader then raises in the training process.
    """
    import torch

    count = int(np.prod(shape))
    if not shared or count == 0:
        array = np.zeros(shape, dtype)
        return torch.from_numpy(array), array
    base = torch.from_numpy(np.zeros(0, dtype))
    tensor = base.new(base._typed_storage()._new_shared(count, device=base.device)).view(shape)
    array = tensor.numpy()
    if array.dtype != np.uint8:  # small arrays: zero them; the image buffer is written in full
        array.fill(0)
    return tensor, array


def _filled(values: np.ndarray, shared: bool) -> Any:
    tensor, array = _buffer(values.shape, values.dtype.type, shared)
    array[...] = values
    return tensor


def _tokens(samples: Sequence[dict[str, Any]], shared: bool) -> dict[str, Any]:
    length = max((len(t) for t in (s.get("action_tokens") for s in samples) if t is not None), default=0)
    ids_t, ids = _buffer((len(samples), length), np.int64, shared)
    mask_t, mask = _buffer((len(samples), length), np.bool_, shared)
    for i, smp in enumerate(samples):
        tok = smp.get("action_tokens")
        if tok is not None:
            ids[i, : len(tok)], mask[i, : len(tok)] = tok, True
    return {"action_tokens": ids_t, "action_tokens_mask": mask_t}
