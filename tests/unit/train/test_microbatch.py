"""Which rows go through each forward pass (cotrain/train/microbatch.py)."""

from __future__ import annotations

import torch

from cotrain.model.inputs import ModelInputs
from cotrain.train.microbatch import micro_batches


def rows(groups: list[torch.Tensor]) -> list[list[int]]:
    return [g.tolist() for g in groups]


def test_equal_micro_batches_without_length_split() -> None:
    lengths = torch.tensor([25, 140, 25, 25, 25, 25])
    assert rows(micro_batches(lengths, 1, False, 81)) == [[0, 1, 2, 3, 4, 5]]
    assert rows(micro_batches(lengths, 2, False, 81)) == [[0, 1, 2], [3, 4, 5]]
    assert rows(micro_batches(lengths, 2, True, 81)) == [[0, 1, 2], [3, 4, 5]]  # only with grad_accum 1


def test_length_split_groups_short_and_long_texts_in_batch_order() -> None:
    lengths = torch.tensor([25, 140, 22, 110, 25, 24, 23, 26])
    assert rows(micro_batches(lengths, 1, True, 81)) == [[0, 2, 4, 5, 6, 7], [1, 3]]
    # similar lengths: a second pass would save too little to pay for itself
    assert rows(micro_batches(torch.tensor([22, 25, 24, 30]), 1, True, 81)) == [[0, 1, 2, 3]]
    assert rows(micro_batches(torch.tensor([7]), 1, True, 81)) == [[0]]


def test_trim_text_cuts_padding_columns_only() -> None:
    b, length = 3, 6
    valid = torch.zeros(b, length, dtype=torch.bool)
    valid[0, :2], valid[1, :4], valid[2, :1] = True, True, True
    inputs = ModelInputs(images=torch.zeros(b, 1, 3, 4, 4), camera_mask=torch.ones(b, 1, dtype=torch.bool),
                         text_ids=torch.arange(b * length).view(b, length), text_valid=valid,
                         text_kind=torch.ones(b, length, dtype=torch.int64), state=torch.zeros(b, 2),
                         state_valid=torch.ones(b, dtype=torch.bool), actions=torch.zeros(b, 2, 2),
                         actions_valid=torch.ones(b, 2, dtype=torch.bool),
                         action_mask=torch.ones(b, 2, dtype=torch.bool))
    short = inputs.select(torch.tensor([0, 2])).trim_text()
    assert short.text_ids.tolist() == [[0, 1], [12, 13]] and short.text_valid.shape == (2, 2)
    assert inputs.trim_text() is not inputs and inputs.trim_text().text_ids.shape == (3, 4)
    full = inputs.select(torch.tensor([1])).trim_text()
    assert full.text_kind.shape == (1, 4)
