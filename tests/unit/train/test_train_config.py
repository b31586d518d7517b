"""TrainConfig's nested shape, the flat keys of earlier versions, and `cotrain train`'s generated options."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from cotrain.errors import ConfigError
from cotrain.model.config import ModelConfig
from cotrain.train.config import (
    LEGACY_KEYS,
    RESUMABLE_CHANGES,
    ModelSection,
    TrainConfig,
    flat_fields,
    make_train_config,
)

# train_config.json as versions before the nested TrainConfig wrote it (every field, flat, sorted).
OLD_FLAT = {
    "action_dim": None, "action_token_loss_weight": None, "action_vocab_size": None, "activation_checkpointing": False,
    "base_stats": {}, "betas": [0.9, 0.95], "checkpoints": True, "clip_grad": 1.0, "device": "auto", "eps": 1e-08,
    "eval_every": 0, "expert_mlp": None, "expert_width": None, "flow_loss_weight": None, "flow_steps": None,
    "freeze": "none", "fsdp": False, "grad_accum": 1, "horizon": None, "init_from": None, "init_scheme": None,
    "keep_checkpoints": 2, "knowledge_insulation": False, "log_every": 1, "lora_rank": 0, "lr": 0.001,
    "max_bad_fraction": 0.01, "max_text_tokens": None, "min_lr_ratio": 0.1, "mixture": "MIX", "model": "tiny",
    "num_workers": 0, "out": "OUT", "peak_tflops": None, "precision": "auto", "progress": False, "resume": False,
    "save_every": 2, "seed": None, "state_dim": None, "steps": 2, "tensorboard": False, "text_loss_weight": None,
    "time_beta": None, "val_batch_size": 16, "val_data": [], "val_max_samples": 64, "wandb": "off",
    "wandb_entity": None, "wandb_group": None, "wandb_project": "cotrain", "wandb_run_name": None, "wandb_tags": [],
    "warmup_steps": 2, "weight_decay": 1e-10,
}
# The same run written nested (only what differs from the defaults).
NESTED = {"mixture": "MIX", "steps": 2, "out": "OUT", "optim": {"lr": 1e-3, "warmup_steps": 2},
          "checkpoint": {"every": 2}, "logging": {"progress": False, "tensorboard": False}}


def test_an_old_flat_config_is_the_nested_one() -> None:
    old, new = TrainConfig.model_validate(OLD_FLAT), TrainConfig.model_validate(NESTED)
    assert old == new
    assert (new.optim.lr, new.checkpoint.every, new.logging.tensorboard, new.model.preset) == (1e-3, 2, False, "tiny")
    assert set(LEGACY_KEYS) == set(OLD_FLAT) - {"mixture", "steps", "out", "resume", "seed"}  # every key placed
    added_since = {"optim.length_split", "model.flow_samples"}  # newer than the flat version: dotted keys only
    assert set(LEGACY_KEYS.values()) | {"mixture", "steps", "out", "resume", "seed"} | added_since == set(
        flat_fields(new))


def test_resumable_changes_are_the_flat_versions_set() -> None:
    flat_before = {"resume", "num_workers", "save_every", "keep_checkpoints", "log_every", "tensorboard", "progress",
                   "out", "checkpoints", "fsdp", "eval_every", "val_data", "val_max_samples", "val_batch_size",
                   "max_bad_fraction", "wandb", "wandb_project", "wandb_entity", "wandb_run_name", "wandb_group",
                   "wandb_tags"}
    assert RESUMABLE_CHANGES == {LEGACY_KEYS.get(k, k) for k in flat_before}


def test_dotted_flat_and_nested_keys_agree_and_later_keys_win() -> None:
    base = {"mixture": "m", "steps": 3, "out": "o"}
    dotted = make_train_config(**base, **{"optim.eps": 1e-6, "model.lora_rank": 4, "wandb.tags": ["a"]})
    flat = make_train_config(**base, eps=1e-6, lora_rank=4, wandb_tags=["a"])
    nested = make_train_config(**base, optim={"eps": 1e-6}, model=ModelSection(lora_rank=4), wandb={"tags": ["a"]})
    assert dotted == flat == nested and dotted.optim.eps == 1e-6 and dotted.wandb.tags == ("a",)
    assert make_train_config(**base, **{"lr": 1.0, "optim.lr": 2.0}).optim.lr == 2.0
    assert make_train_config(**base, optim={"lr": 1.0, "eps": 1e-5}, lr=2.0).optim == \
        make_train_config(**base, optim={"lr": 2.0, "eps": 1e-5}).optim  # a flat key lands inside the section


@pytest.mark.parametrize(("fields", "message"), [
    ({"optim.momentum": 0.9}, "train config: optim.momentum: Extra inputs are not permitted"),
    ({"steps.every": 1}, "train config: steps.every: steps is not a section"),
    ({"colour": "red"}, "train config: colour: Extra inputs are not permitted"),
    ({"model.flow_samples": 0}, "train config: model.flow_samples: Input should be greater than or equal to 1"),
    ({"model.flow_samples": 65}, "train config: model.flow_samples: Input should be less than or equal to 64"),
    ({"model.max_text_tokens": 2}, "train config: model.max_text_tokens: Input should be greater than or equal to 4"),
    ({"lora_rank": 4, "freeze": "vision"}, "train config: --lora-rank already freezes the vision tower"),
    ({"val_data": ["v"]}, "train config: --val-data is only read with --eval-every N"),
])
def test_bad_fields_are_one_line_errors(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_train_config(mixture="m", steps=1, out="o", **fields)
    assert str(info.value).startswith(message)


def test_configs_are_frozen() -> None:
    cfg = make_train_config(mixture="m", steps=1, out="o")
    with pytest.raises(Exception, match="frozen"):
        cfg.optim.lr = 1.0  # type: ignore[misc]  # the point of the test


def test_model_section_reuses_the_model_configs_fields() -> None:
    for name, field in ModelSection.model_fields.items():
        if name not in ModelConfig.model_fields or name == "preset":  # (preset: the name, not the field)
            continue
        base = ModelConfig.model_fields[name]
        assert field.metadata == base.metadata and field.description == base.description, name
        if name in ("freeze", "lora_rank", "activation_checkpointing", "knowledge_insulation"):
            assert field.default == base.default, name
        else:
            assert field.default is None, name  # None: the preset's value
    overrides = make_train_config(mixture="m", steps=1, out="o", horizon=5, freeze="vision").model.overrides()
    assert overrides["horizon"] == 5 and overrides["freeze"] == "vision" and overrides["flow_steps"] is None
    assert set(overrides) == set(ModelSection.model_fields) - {"preset", "init_from", "base_stats"}


@pytest.fixture()
def captured(monkeypatch: pytest.MonkeyPatch) -> list[TrainConfig]:
    """`cotrain train` up to the TrainConfig it would train (nothing is trained)."""
    seen: list[TrainConfig] = []

    def fake_train(cfg: TrainConfig) -> Any:
        seen.append(cfg)
        raise ConfigError("stop: captured")

    monkeypatch.setattr("cotrain.train.loop.train", fake_train)
    return seen


def _cli(*args: str) -> Any:
    from cotrain.cli.app import app

    return CliRunner().invoke(app, ["train", *args], env={"COLUMNS": "200"})


def test_every_train_flag_keeps_its_meaning(captured: list[TrainConfig]) -> None:
    _cli("m.yaml", "--model", "small", "--steps", "7", "--out", "o", "--resume", "--init-from", "ckpt",
         "--base-stats", "robot=lerobot", "--freeze", "backbone", "--lora-rank", "0", "--grad-accum", "2", "--fsdp",
         "--activation-checkpointing", "--knowledge-insulation", "--lr", "0.002", "--warmup-steps", "5",
         "--save-every", "9", "--workers", "3", "--precision", "fp32", "--eval-every", "4", "--val-data", "v1",
         "--val-data", "v2", "--max-bad-fraction", "0.5", "--wandb", "offline", "--wandb-project", "p",
         "--wandb-run-name", "r", "--set", "optim.eps=1e-6", "--set", "clip_grad=0.5", "--json")
    want = TrainConfig(
        mixture="m.yaml", steps=7, out="o", resume=True,
        model={"preset": "small", "init_from": "ckpt", "base_stats": {"robot": "lerobot"}, "freeze": "backbone",
               "activation_checkpointing": True, "knowledge_insulation": True},
        optim={"lr": 0.002, "warmup_steps": 5, "grad_accum": 2, "eps": 1e-6, "clip_grad": 0.5},
        data={"num_workers": 3, "max_bad_fraction": 0.5}, parallel={"precision": "fp32", "fsdp": True},
        checkpoint={"every": 9}, validation={"every": 4, "data": ("v1", "v2")},
        wandb={"mode": "offline", "project": "p", "run_name": "r"})
    assert captured == [want]


def test_train_defaults_are_the_configs(captured: list[TrainConfig]) -> None:
    _cli("m.yaml", "--steps", "3", "--out", "o")
    assert captured == [TrainConfig(mixture="m.yaml", steps=3, out="o")]


def test_set_overrides_an_option_by_dotted_or_flat_key(captured: list[TrainConfig]) -> None:
    _cli("m.yaml", "--steps", "3", "--out", "o", "--lr", "0.1", "--set", "optim.lr=0.2")
    _cli("m.yaml", "--steps", "3", "--out", "o", "--lr", "0.1", "--set", "lr=0.2")
    _cli("m.yaml", "--steps", "3", "--out", "o", "--set", "time-beta=[4, 1]", "--set", "logging.every=5")
    assert captured[0].optim.lr == captured[1].optim.lr == 0.2
    assert captured[2].model.time_beta == (4.0, 1.0) and captured[2].logging.every == 5


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "optim.momentum=0.9"], "train config: optim.momentum: Extra inputs are not permitted"),
    (["--set", "nokey"], "--set 'nokey': expected KEY=VALUE"),
    (["--base-stats", "robot"], "--base-stats 'robot': expected SOURCE=ASSET"),
    (["--freeze", "all"], "train config: model.freeze: Input should be 'none', 'vision' or 'backbone'"),
])
def test_bad_train_options_are_one_line_errors(args: list[str], message: str, captured: list[TrainConfig]) -> None:
    result = _cli("m.yaml", "--steps", "3", "--out", "o", *args)
    assert isinstance(result.exception, ConfigError) and not captured
    assert str(result.exception).startswith(message)
