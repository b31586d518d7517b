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
        import torch

        b, s = len(samples), self.image_size
        images = np.zeros((b, self.max_cameras, s, s, 3), np.uint8)
        cam_mask = np.zeros((b, self.max_cameras), bool)
        state = np.zeros((b, self.state_dim), np.float32)
        state_mask = np.zeros((b, self.state_dim), bool)
        actions = np.zeros((b, self.horizon, self.action_dim), np.float32)
        action_mask = np.zeros((b, self.action_dim), bool)
        valid = np.zeros((b, self.horizon), bool)
        for i, smp in enumerate(samples):
            c = min(len(smp["images"]), self.max_cameras)
            images[i, :c], cam_mask[i, :c] = smp["images"][:c], smp["camera_present"][:c]
            ds, da = len(smp["state"]), smp["actions"].shape[1]
            state[i, :ds], state_mask[i, :ds] = smp["state"], True
            if da:
                actions[i, :, :da], action_mask[i, :da], valid[i] = smp["actions"], True, smp["actions_valid"]
        batch: dict[str, Any] = {
            "images": torch.from_numpy(images).permute(0, 1, 4, 2, 3),
            "camera_mask": torch.from_numpy(cam_mask),
            "state": torch.from_numpy(state),
            "state_mask": torch.from_numpy(state_mask),
            "actions": torch.from_numpy(actions),
            "action_mask": torch.from_numpy(action_mask),
            "actions_valid": torch.from_numpy(valid),
            "has_actions": torch.from_numpy(action_mask.any(axis=1)),
            "source": torch.tensor([smp["source"] for smp in samples], dtype=torch.int64),
            "loss_weight": torch.tensor([smp["loss_weight"] for smp in samples], dtype=torch.float32),
            "skipped": torch.tensor([smp.get("skipped", 0) for smp in samples], dtype=torch.int64),
        }
        batch.update(_tokens(samples))
        for field in TEXT_FIELDS:
            batch[field] = [smp.get(field) for smp in samples]
        return batch


def _tokens(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    import torch

    length = max((len(t) for t in (s.get("action_tokens") for s in samples) if t is not None), default=0)
    ids = np.zeros((len(samples), length), np.int64)
    mask = np.zeros((len(samples), length), bool)
    for i, smp in enumerate(samples):
        tok = smp.get("action_tokens")
        if tok is not None:
            ids[i, : len(tok)], mask[i, : len(tok)] = tok, True
    return {"action_tokens": torch.from_numpy(ids), "action_tokens_mask": torch.from_numpy(mask)}
