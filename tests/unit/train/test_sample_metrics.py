"""The training loop's per-sample metrics as named fields: packing for the one all_gather, the step
summary, and a 2-step run whose metrics.jsonl equals what the positional [B, 10] version logged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from cotrain.dataset import keys
from cotrain.train.config import TrainConfig
from cotrain.train.loop import train
from cotrain.train.metrics import SampleMetrics, summarise_step
from tests.fixtures.cotrain_data import write_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# metrics.jsonl of the run below as written by the positional-tensor code (commit 0795f40, CPU, one
# thread), less the wall-clock fields; `tokens` is tokens_per_s x step_time_s.
BEFORE = [
    {"step": 0, "loss": 3.8926730155944824, "flow": 1.631394386291504, "text": 7.161609649658203,
     "action_tokens": 7.095704078674316, "grad_norm": 5.216846942901611, "lr": 0.0005, "truncated": 0,
     "loss_source": {"robot": 1.3548996448516846, "tok": 9.2800874710083, "vl": 7.161609649658203},
     "loss_modality": {"action_tokens": 9.2800874710083, "robot": 1.3548996448516846,
                       "vision_language": 7.161609649658203},
     "proportions": {"robot": 0.5, "tok": 0.25, "vl": 0.25}, "tokens": 290.0},
    {"step": 1, "loss": 3.819857597351074, "flow": 1.521672248840332, "text": 7.146145820617676,
     "action_tokens": 7.141341209411621, "grad_norm": 2.976783514022827, "lr": 0.001, "truncated": 0,
     "loss_source": {"robot": 1.589532494544983, "tok": 8.527292251586914, "vl": 7.146145820617676},
     "loss_modality": {"action_tokens": 8.527292251586914, "robot": 1.589532494544983,
                       "vision_language": 7.146145820617676},
     "proportions": {"robot": 0.5, "tok": 0.25, "vl": 0.25}, "tokens": 288.0},
]
WALL_CLOCK = ("step_time_s", "samples_per_s", "tokens_per_s", "data_wait", "bad_samples", "bad_fraction", "elapsed_s")


def _samples(n: int, offset: float = 0.0) -> SampleMetrics:
    cols = [torch.arange(n, dtype=torch.float32) + offset + 10 * i for i in range(len(SampleMetrics._fields))]
    return SampleMetrics(*cols)


def test_pack_unpack_and_cat_keep_every_field() -> None:
    a, b = _samples(3), _samples(2, offset=100.0)
    packed = a.pack()
    assert packed.shape == (3, 10) and packed.dtype == torch.float32
    assert torch.equal(packed[:, SampleMetrics._fields.index("tokens")], a.tokens)  # columns in field order
    back = SampleMetrics.unpack(packed)
    assert all(torch.equal(x, y) for x, y in zip(back, a))
    both = SampleMetrics.cat([a, b])
    assert all(torch.equal(x, torch.cat([y, z])) for x, y, z in zip(both, a, b))
    assert torch.equal(both.term("text")[1], torch.cat([a.text_count, b.text_count]))


def test_summary_means_over_the_samples_that_have_a_term() -> None:
    ones, zeros = torch.ones(4), torch.zeros(4)
    s = SampleMetrics(source=torch.tensor([0.0, 0.0, 1.0, 1.0]), modality=torch.tensor([0.0, 0.0, 2.0, 2.0]),
                      flow=torch.tensor([1.0, 3.0, 0.0, 0.0]), flow_count=torch.tensor([5.0, 5.0, 0.0, 0.0]),
                      text=torch.tensor([0.0, 0.0, 2.0, 4.0]), text_count=torch.tensor([0.0, 0.0, 3.0, 1.0]),
                      action_tokens=zeros, action_tokens_count=zeros,
                      loss_weight=torch.tensor([1.0, 1.0, 0.5, 0.5]), tokens=ones)
    out = summarise_step(s, {"flow": 1.0, "text": 2.0, "action_tokens": 1.0}, ["robot", "vl"],
                         ["robot", "human_video", "vision_language"])
    assert out["flow"] == 2.0 and out["text"] == 3.0 and out["action_tokens"] is None
    assert out["loss"] == pytest.approx((1 + 3 + 0.5 * 4 + 0.5 * 8) / 4)
    assert out["loss_source"] == {"robot": 2.0, "vl": 6.0} and out["proportions"] == {"robot": 0.5, "vl": 0.5}
    assert out["loss_modality"] == {"robot": 2.0, "vision_language": 6.0}


def test_two_step_run_logs_what_the_positional_tensor_logged(tmp_path: Path) -> None:
    from cotrain.action_tokens import fit_tokenizer
    from cotrain.convert.pipeline import convert
    from cotrain_converters.tokens import TokensOptions

    write_dataset(tmp_path / "robot", samples=24, state_dim=4, action_dim=3, horizon=4, cameras=("front",))
    write_dataset(tmp_path / "vl", samples=16, modality=keys.VISION_LANGUAGE, cameras=("image",))
    fit_tokenizer([tmp_path / "robot"], tmp_path / "bins", kind="bins")
    convert("tokens", tmp_path / "robot", tmp_path / "tok", TokensOptions(tokenizer=str(tmp_path / "bins"), name="tok"))
    doc = {"name": "m", "seed": 3, "batch_size": 8, "image_size": 32,
           "sources": {"robot": {"path": "robot"}, "tok": {"path": "tok"}, "vl": {"path": "vl", "loss_weight": 0.5}},
           "phases": [{"name": "a", "steps": 10, "weights": {"robot": 0.5, "tok": 0.25, "vl": 0.25}}]}
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump(doc))
    train(TrainConfig(mixture=str(tmp_path / "mix.yaml"), model="tiny", steps=2, out=str(tmp_path / "run"),
                      save_every=2, progress=False, tensorboard=False, warmup_steps=2, lr=1e-3, log_every=1))
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for row in logged:
        row["tokens"] = row["tokens_per_s"] * row["step_time_s"]
        for key in WALL_CLOCK:
            row.pop(key)
    # Same names; the values were bitwise equal on the machine that recorded them (rel 1e-6 allows other builds).
    assert [sorted(r) for r in logged] == [sorted(r) for r in BEFORE]
    for got, want in zip(logged, BEFORE):
        for key, value in want.items():
            assert got[key] == (pytest.approx(value, rel=1e-6) if not isinstance(value, dict) else
                                {k: pytest.approx(v, rel=1e-6) for k, v in value.items()}), key


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux /dev/full for a real ENOSPC")
def test_a_full_disk_while_logging_metrics_is_one_line_naming_the_file(tmp_path: Path) -> None:
    from cotrain.atomic import WriteError
    from cotrain.train.metrics import METRICS_FILE, MetricsLogger

    (tmp_path / METRICS_FILE).symlink_to("/dev/full")  # every write there fails with ENOSPC
    logger = MetricsLogger(tmp_path, 0, enabled=True)
    with pytest.raises(WriteError) as caught:
        logger.log({"step": 0, "loss": 1.0})
    message = str(caught.value)
    assert "\n" not in message and str(tmp_path / METRICS_FILE) in message and "ENOSPC" in message
