"""Model inputs: a loader batch (cotrain.mix.collate) plus text tokens, as one bundle of tensors.

The loader already pads images, state and actions to the model's sizes (the trainer hands it a
`Collator` built from the model config); this module adds the tokenised text (text.py) and nothing
else, so training, evaluation and `Policy.predict` feed the network the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Protocol

import torch

from cotrain.model.text import TextLayout

__all__ = ["ModelInputs", "build_inputs"]


@dataclass(frozen=True)
class ModelInputs:
    """Tensors of one (micro-)batch; B = samples, C = cameras, L = text tokens, H = horizon.

    Args:
        images: uint8 [B, C, 3, S, S]; camera_mask: bool [B, C].
        text_ids: int64 [B, L]; text_valid: bool [B, L]; text_kind: int64 [B, L] (text.KIND_*).
        state: float32 [B, Ds] (normalised, zero-padded); state_valid: bool [B] (the sample has a state).
        actions: float32 [B, H, Da] (normalised, zero-padded); actions_valid: bool [B, H];
        action_mask: bool [B, Da] (real dimensions of the sample's embodiment).
    """

    images: torch.Tensor
    camera_mask: torch.Tensor
    text_ids: torch.Tensor
    text_valid: torch.Tensor
    text_kind: torch.Tensor
    state: torch.Tensor
    state_valid: torch.Tensor
    actions: torch.Tensor
    actions_valid: torch.Tensor
    action_mask: torch.Tensor

    @property
    def batch_size(self) -> int:
        return int(self.images.shape[0])

    def to(self, device: torch.device | str) -> ModelInputs:
        return replace(self, **{f.name: getattr(self, f.name).to(device, non_blocking=True) for f in fields(self)})

    def select(self, index: slice | torch.Tensor) -> ModelInputs:
        """Rows `index` of every tensor (micro-batches for gradient accumulation)."""
        return replace(self, **{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def trim_text(self) -> ModelInputs:
        """The same rows with text columns cut to the longest real text among them (text is right-padded)."""
        full = int(self.text_ids.shape[1])
        length = min(full, max(1, int(self.text_valid.sum(1).max()))) if self.batch_size else full
        if length == full:
            return self
        return replace(self, text_ids=self.text_ids[:, :length], text_valid=self.text_valid[:, :length],
                       text_kind=self.text_kind[:, :length])


# Text fields of a loader batch that the layout encodes (absent ones are skipped per batch).
_TEXT_FIELDS = ("instruction", "prompt", "target", "conversation", "key")


class CollatedBatch(Protocol):
    """What build_inputs reads of a collated batch: `cotrain.mix.collate.Batch` or a plain dict of the
    same keys (the model may not import mix, so the loader's type is met structurally)."""

    def __getitem__(self, key: str) -> Any: ...

    def __contains__(self, key: object) -> bool: ...

    def get(self, key: str, default: Any = None) -> Any: ...


def build_inputs(batch: CollatedBatch, layout: TextLayout) -> tuple[ModelInputs, int]:
    """(inputs, number of samples whose text was truncated) for a collated loader batch."""
    b = len(batch["source"]) if "source" in batch else int(batch["images"].shape[0])
    encoded = []
    for i in range(b):
        sample: dict[str, Any] = {name: batch[name][i] for name in _TEXT_FIELDS if name in batch}
        if layout.discrete_state and bool(batch["state_mask"][i].any()):
            sample["state"] = batch["state"][i].tolist()
        tokens = batch.get("action_tokens")
        mask = batch.get("action_tokens_mask")
        if tokens is not None and mask is not None and bool(mask[i].any()):
            sample["action_tokens"] = tokens[i][mask[i]].tolist()
        encoded.append(layout.encode(sample))
    length = max(len(ids) for ids, _, _ in encoded)
    ids = torch.full((b, length), layout.tokenizer.pad_id, dtype=torch.int64)
    kind = torch.zeros((b, length), dtype=torch.int64)
    valid = torch.zeros((b, length), dtype=torch.bool)
    for i, (row, kinds, _) in enumerate(encoded):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.int64)
        kind[i, : len(row)] = torch.tensor(kinds, dtype=torch.int64)
        valid[i, : len(row)] = True
    inputs = ModelInputs(
        images=batch["images"], camera_mask=batch["camera_mask"], text_ids=ids, text_valid=valid, text_kind=kind,
        state=batch["state"], state_valid=batch["state_mask"].any(dim=1), actions=batch["actions"],
        actions_valid=batch["actions_valid"], action_mask=batch["action_mask"],
    )
    return inputs, sum(1 for _, _, t in encoded if t)
