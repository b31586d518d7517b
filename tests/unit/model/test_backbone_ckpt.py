"""cotrain backbone checkpoints: saved backbone tensors load exactly into a new VLA; mismatches are one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from cotrain.errors import ConfigError
from cotrain.model.backbone_ckpt import backbone_state, is_backbone_dir, load_backbone, save_backbone
from cotrain.model.config import get_preset, with_overrides
from cotrain.model.factory import build_vla
from cotrain.model.text import build_byte_tokenizer


def _model(seed: int, preset: str = "tiny-conv", init_from: Path | None = None, image_size: int = 64):
    cfg = with_overrides(get_preset(preset), horizon=4, action_dim=2, state_dim=2, image_size=image_size,
                         max_cameras=1)
    return build_vla(cfg, seed=seed, tokenizer=build_byte_tokenizer(), init_from=init_from)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    model, cfg = _model(seed=1)
    root = save_backbone(model, cfg, tmp_path_factory.mktemp("bb") / "ckpt", {"command": "test"})
    return root, backbone_state(model)


def test_load_copies_the_backbone_and_leaves_the_expert_random(saved: tuple) -> None:
    root, tensors = saved
    assert is_backbone_dir(root)
    loaded, _ = _model(seed=2, init_from=root)
    fresh, _ = _model(seed=2)
    state, fresh_state = loaded.state_dict(), fresh.state_dict()
    for name, value in tensors.items():
        assert torch.equal(state[name], value), name
    expert = [k for k in state if ".expert." in k or k.startswith(("action_", "state_proj", "time_mlp"))]
    assert expert and all(torch.equal(state[k], fresh_state[k]) for k in expert)
    assert not any(k in tensors for k in expert)


def test_config_records_architecture_and_recipe(saved: tuple) -> None:
    raw = json.loads((saved[0] / "config.json").read_text())
    assert raw["format"] == "cotrain-backbone" and raw["preset"] == "tiny-conv"
    assert raw["architecture"]["vision"]["stem"] == "conv" and raw["image_size"] == 64
    assert raw["parameters"] == sum(t.numel() for t in saved[1].values())
    assert raw["recipe"] == {"command": "test"}


def test_other_architecture_is_refused(saved: tuple) -> None:
    with pytest.raises(ConfigError, match="architecture .* is not preset 'tiny'"):
        _model(seed=0, preset="tiny", init_from=saved[0])


def test_other_image_size_is_refused(saved: tuple) -> None:
    with pytest.raises(ConfigError, match="takes 64x64 images"):
        _model(seed=0, init_from=saved[0], image_size=32)


@pytest.mark.parametrize("damage", ["missing", "extra", "shape", "nan"])
def test_damaged_weights_are_refused(saved: tuple, tmp_path: Path, damage: str) -> None:
    root = tmp_path / "ckpt"
    root.mkdir()
    (root / "config.json").write_text((saved[0] / "config.json").read_text())
    tensors = load_file(str(saved[0] / "model.safetensors"))
    name = "blocks.0.backbone.self_attn.q_proj.weight"
    if damage == "missing":
        del tensors[name]
    elif damage == "extra":
        tensors["blocks.0.expert.mlp.up_proj.weight"] = torch.zeros(2, 2)
    elif damage == "shape":
        tensors[name] = tensors[name][:-1].contiguous()
    else:
        tensors[name] = tensors[name].clone()
        tensors[name][0, 0] = float("nan")
    save_file(tensors, str(root / "model.safetensors"))
    model, cfg = _model(seed=0)
    expected = {"missing": "is missing", "extra": "not part of the backbone", "shape": "has shape",
                "nan": "NaN or Inf"}[damage]
    with pytest.raises(ConfigError, match=expected):
        load_backbone(model, cfg, root)


def test_not_a_backbone_dir(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "paligemma"}')
    model, cfg = _model(seed=0)
    assert not is_backbone_dir(tmp_path)
    with pytest.raises(ConfigError, match="not a cotrain backbone checkpoint"):
        load_backbone(model, cfg, tmp_path)
