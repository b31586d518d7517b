"""The simulator backbone: `cotrain sim pretrain` writes a loadable checkpoint; the shipped one points."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cotrain.cli.app import app
from cotrain.lab.sim.embodiments import get_embodiment
from cotrain.lab.sim.pretrain import _layout, pointing_error
from cotrain.lab.sim.pretrain_config import SHIPPED_BACKBONE, PretrainConfig, resolve_backbone
from cotrain.lab.sim.pretrain_data import draw_sample, pretrain_tasks
from cotrain.lab.sim.render import Renderer
from cotrain.model.backbone_ckpt import architecture_of, backbone_state
from cotrain.model.config import get_preset, with_overrides
from cotrain.model.factory import build_vla
from cotrain.model.text import build_byte_tokenizer


def _vla(init_from: str | Path | None):
    cfg = with_overrides(get_preset("tiny-conv"), horizon=16, action_dim=4, state_dim=4, image_size=64, max_cameras=1)
    return build_vla(cfg, seed=0, tokenizer=build_byte_tokenizer(), init_from=init_from)


def test_cli_pretrain_writes_a_checkpoint_train_loads(tmp_path: Path) -> None:
    out = tmp_path / "bb"
    result = CliRunner().invoke(app, ["sim", "pretrain", str(out), "--steps", "2", "--batch-size", "2",
                                      "--eval-every", "2", "--eval-samples", "4", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["steps"] == 2 and set(report["pointing_error"]) <= {"instruction", "point", "gripper"}
    raw = json.loads((out / "config.json").read_text())
    assert raw["recipe"]["config"] == PretrainConfig(steps=2, batch_size=2, eval_every=2,
                                                     eval_samples=4).model_dump(mode="json")
    model, _ = _vla(out)
    assert model is not None


def test_same_config_same_weights(tmp_path: Path) -> None:
    from cotrain.lab.sim.pretrain import pretrain_backbone

    cfg = PretrainConfig(steps=2, batch_size=2, eval_every=100, eval_samples=2)
    a = backbone_state(_vla(pretrain_backbone(cfg, tmp_path / "a").out)[0])
    b = backbone_state(_vla(pretrain_backbone(cfg, tmp_path / "b").out)[0])
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_shipped_backbone_matches_its_preset_and_recipe() -> None:
    raw = json.loads((SHIPPED_BACKBONE / "config.json").read_text())
    assert raw["architecture"] == architecture_of(get_preset(raw["preset"]))
    assert raw["recipe"]["config"] == PretrainConfig().model_dump(mode="json")  # the defaults are its recipe
    assert resolve_backbone("sim-paligemma") == str(SHIPPED_BACKBONE) and resolve_backbone("none") is None


def test_shipped_backbone_points_at_named_objects() -> None:
    """Loaded the way `--init-from` loads it, it answers held-out pointing prompts near the truth."""
    model, cfg = _vla(SHIPPED_BACKBONE)
    rng = np.random.default_rng(2024)
    renderer, arm, tasks = Renderer(64), get_embodiment("sim_arm"), pretrain_tasks(("pick", "push", "place"))
    samples = [draw_sample(rng, renderer, arm, tasks, mix=(1, 1, 1, 0)) for _ in range(48)]
    errors = pointing_error(model, _layout(cfg), samples)
    recorded = json.loads((SHIPPED_BACKBONE / "config.json").read_text())["recipe"]["pointing_error"]
    # a random backbone answers ~0.3-1.0 away; objects are 0.21 apart, so < 0.1 names the right one
    assert set(errors) == {"instruction", "point", "gripper"}
    assert all(v < 0.1 for v in errors.values()), (errors, recorded)


@pytest.mark.parametrize("value", ["none", "sim-paligemma"])
def test_study_default_init(value: str) -> None:
    from cotrain.lab.ablate.config import AblationConfig

    cfg = AblationConfig(mixtures=("m.yaml",), init_from=value)
    assert cfg.train_fields().get("init_from") == resolve_backbone(value)


def test_cli_backbone_prints_the_shipped_directory() -> None:
    result = CliRunner().invoke(app, ["sim", "backbone"])
    assert result.exit_code == 0 and result.stdout.strip() == str(SHIPPED_BACKBONE)


def test_missing_shipped_backbone_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cotrain.errors import ConfigError
    from cotrain.lab.sim import pretrain_config

    monkeypatch.setattr(pretrain_config, "SHIPPED_BACKBONE", tmp_path / "gone")
    with pytest.raises(ConfigError, match="regenerate it with `cotrain sim pretrain"):
        pretrain_config.resolve_backbone("sim-paligemma")
