"""The random-init vision front ends: conv patch stem, sine-cosine positions, a tower without layers."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from cotrain.errors import ConfigError
from cotrain.model.config import VisionSpec, get_preset, with_overrides
from cotrain.model.factory import build_vla
from cotrain.model.text import build_byte_tokenizer
from cotrain.model.vision_stem import ConvPatchStem, sincos_grid

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZES = {"image_size": 32, "max_cameras": 1, "horizon": 4, "action_dim": 3, "state_dim": 4}


def tiny_conv(**updates: object):
    cfg = with_overrides(get_preset("tiny-conv"), **{**SIZES, **updates})
    return build_vla(cfg, seed=0, tokenizer=build_byte_tokenizer())


def test_sincos_grid_encodes_column_then_row() -> None:
    grid = sincos_grid(4, 8)  # quarter = 2 frequencies: 1 and 1/10
    assert grid.shape == (16, 8)
    row, col = 2, 3
    token = grid[row * 4 + col]
    want = [math.sin(col), math.sin(col / 10), math.cos(col), math.cos(col / 10),
            math.sin(row), math.sin(row / 10), math.cos(row), math.cos(row / 10)]
    assert token.tolist() == pytest.approx(want, abs=1e-6)
    assert len({tuple(t.tolist()) for t in grid}) == 16  # every patch has its own code
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_grid(4, 10)


@pytest.mark.parametrize(("patch", "convs"), [(2, 1), (8, 3), (16, 4)])
def test_conv_stem_reaches_the_patch_grid(patch: int, convs: int) -> None:
    stem = ConvPatchStem(24, patch)
    out = stem(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, 24, 64 // patch, 64 // patch)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in stem.modules()) == convs
    assert stem.weight is stem.net[-1].weight


def test_conv_stem_is_local() -> None:
    # a pixel changed in one corner changes only the patches whose receptive field holds it
    stem = ConvPatchStem(8, 8).eval()
    image = torch.zeros(1, 3, 64, 64)
    moved = image.clone()
    moved[0, :, 0, 0] = 1.0
    diff = (stem(moved) - stem(image)).abs().sum(dim=1)[0]
    assert diff[0, 0] > 0
    assert diff[2:, :].sum() == 0 and diff[:, 2:].sum() == 0


def test_front_end_options_are_validated() -> None:
    with pytest.raises(ValidationError, match="power-of-two patch_size"):
        VisionSpec(patch_size=14, width=32, depth=1, mlp=64, heads=2, stem="conv")
    with pytest.raises(ValidationError, match="width divisible by 4"):
        VisionSpec(patch_size=8, width=30, depth=1, mlp=64, heads=2, positions="sincos")
    with pytest.raises(ValidationError, match="Input should be 'patch' or 'conv'"):
        VisionSpec(patch_size=8, width=32, depth=1, mlp=64, heads=2, stem="resnet")
    with pytest.raises(ConfigError, match=r"model 'tiny-conv': vision\.positions: Input should be"):
        with_overrides(get_preset("tiny-conv"), vision={**get_preset("tiny-conv").vision.model_dump(),
                                                        "positions": "rope"})


def test_tiny_conv_builds_the_front_end_and_its_image_tokens_are_exact() -> None:
    model, cfg = tiny_conv()
    tower = getattr(model.vision_tower, "vision_model", model.vision_tower)  # transformers 5 drops the wrapper
    emb = tower.embeddings
    assert isinstance(emb.patch_embedding, ConvPatchStem) and len(tower.encoder.layers) == 0
    assert torch.equal(emb.position_embedding.weight, sincos_grid(4, 128))  # kept through fan-in init
    assert cfg.init_scheme == "fan_in" and cfg.vision.depth == 0
    # tokens = projector(post-norm(conv(pixels) + grid)): nothing else runs before the backbone
    images = torch.randint(0, 256, (2, 1, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    tokens, valid = model.embed_images(images, torch.ones(2, 1, dtype=torch.bool))
    pixels = images[:, 0].float() / 127.5 - 1.0
    patches = emb.patch_embedding(pixels).flatten(2).transpose(1, 2) + emb.position_embedding.weight
    want = model.projector(tower.post_layernorm(patches))
    assert valid.all() and torch.allclose(tokens, want, atol=1e-6)


def test_tiny_conv_rebuilds_from_its_stored_config() -> None:
    # what Policy.load does: the run's stored config (backbone config included) rebuilds the same
    # module tree, so a checkpoint's keys load strictly, conv stem included
    model, cfg = tiny_conv()
    again, _ = build_vla(cfg, seed=1, tokenizer=build_byte_tokenizer())
    stem = next(k for k in model.state_dict() if k.endswith("patch_embedding.net.0.weight"))
    assert not torch.equal(again.state_dict()[stem], model.state_dict()[stem])
    again.load_state_dict(model.state_dict(), strict=True)  # raises on any missing or unexpected key
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    assert any(".patch_embedding.net." in k for k in model.state_dict())
