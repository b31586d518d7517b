"""The VLA network on CPU with the tiny preset: mask layout, flow matching, losses, cached sampling."""

from __future__ import annotations

import math

import pytest
import scipy.stats
import torch

from cotrain.errors import ConfigError
from cotrain.model.attention import attention_mask, positions
from cotrain.model.config import get_preset, with_overrides
from cotrain.model.factory import build_vla, count_parameters
from cotrain.model.flow_matching import euler_sample, interpolate, sample_time, velocity_target
from cotrain.model.inputs import ModelInputs, build_inputs
from cotrain.model.losses import combine_losses, masked_flow_loss
from cotrain.model.text import KIND_ACTION, KIND_NONE, KIND_TEXT, TextLayout, build_byte_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


SIZES = {"image_size": 32, "max_cameras": 2, "horizon": 4, "action_dim": 3, "state_dim": 4}


def tiny(preset: str = "tiny", **updates: object):
    tok = build_byte_tokenizer()
    cfg = with_overrides(get_preset(preset), **{**SIZES, **updates})
    model, cfg = build_vla(cfg, seed=0, tokenizer=tok)
    layout = TextLayout(tok, cfg.backbone_config["text_config"]["vocab_size"], cfg.action_vocab_size,
                        cfg.action_token_skip, cfg.max_text_tokens)
    return model, cfg, layout


def batch(seed: int = 0) -> dict:
    """Four samples: robot (2 cams), robot with padded dims/steps (1 cam), VL caption, action tokens."""
    g = torch.Generator().manual_seed(seed)
    b = 4
    return {
        "images": torch.randint(0, 256, (b, 2, 3, 32, 32), dtype=torch.uint8, generator=g),
        "camera_mask": torch.tensor([[1, 1], [1, 0], [1, 0], [1, 1]], dtype=torch.bool),
        "state": torch.randn(b, 4, generator=g) * torch.tensor([[1.0], [1.0], [0.0], [1.0]]),
        "state_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool),
        "actions": torch.randn(b, 4, 3, generator=g).clamp(-1, 1),
        "action_mask": torch.tensor([[1, 1, 1], [1, 1, 0], [0, 0, 0], [1, 1, 1]], dtype=torch.bool),
        "actions_valid": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool),
        "source": torch.tensor([0, 0, 1, 2]),
        "instruction": ["pick the cube", "place it", None, "go"],
        "prompt": [None, None, "caption en", None],
        "target": [None, None, "a red cube", None],
        "conversation": [None] * 4,
        "key": ["a", "b", "c", "d"],
        "action_tokens": torch.tensor([[0, 0, 0], [0, 0, 0], [0, 0, 0], [5, 7, 1000]]),
        "action_tokens_mask": torch.tensor([[0, 0, 0], [0, 0, 0], [0, 0, 0], [1, 1, 1]], dtype=torch.bool),
    }


# ---- attention layout ---------------------------------------------------------------------------------------

def test_mask_layout_exact() -> None:
    # prefix: img img | prompt prompt | target target | pad ; suffix: state act act
    pv = torch.tensor([[1, 1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    resp = torch.tensor([[0, 0, 0, 0, 1, 1, 0]], dtype=torch.bool)
    sv = torch.ones(1, 3, dtype=torch.bool)
    sar = torch.tensor([[1, 1, 0]])
    m = attention_mask(pv, resp.long(), resp, sv, sar)[0].int()
    expected = torch.tensor([
        # i0 i1 p0 p1 t0 t1 pad st a0 a1
        [1, 1, 1, 1, 0, 0, 0, 0, 0, 0],  # image 0: bidirectional over images + prompt
        [1, 1, 1, 1, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0, 0, 0, 0],  # prompt
        [1, 1, 1, 1, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 0, 0, 0, 0, 0],  # target 0: causal
        [1, 1, 1, 1, 1, 1, 0, 0, 0, 0],  # target 1
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # padding attends nothing, nothing attends it
        [1, 1, 1, 1, 0, 0, 0, 1, 0, 0],  # state: prefix context (never the response) + itself
        [1, 1, 1, 1, 0, 0, 0, 1, 1, 1],  # actions: context, state, each other
        [1, 1, 1, 1, 0, 0, 0, 1, 1, 1],
    ])
    assert torch.equal(m, expected)
    assert positions(torch.cat([pv, sv], 1)).tolist() == [[0, 1, 2, 3, 4, 5, 5, 6, 7, 8]]


def test_prefix_never_sees_suffix_and_padding_is_invisible() -> None:
    model, _, layout = tiny()
    inputs, _ = build_inputs(batch(), layout)
    g = torch.Generator().manual_seed(1)
    noise, t = torch.randn(4, 4, 3, generator=g), sample_time(4, g)
    model.eval()
    with torch.no_grad():
        hp1, _ = model._joint(inputs, interpolate(inputs.actions, noise, t), t, False)
        hp2, _ = model._joint(inputs, interpolate(inputs.actions, noise * 3, t * 0.5), t * 0.5, False)
        _, valid, _, _ = model.embed_prefix(inputs)
        assert torch.equal(hp1[valid], hp2[valid])  # valid prefix outputs never depend on the suffix
        # sample 1 alone (no second camera, shorter text) gives the same losses as inside the batch
        full = model(inputs, noise, t)
        one = model(inputs.select(slice(1, 2)), noise[1:2], t[1:2])
    assert torch.allclose(full["flow"][1], one["flow"][0], atol=1e-5)


# ---- flow matching --------------------------------------------------------------------------------------------

def test_time_distribution_and_determinism() -> None:
    t = sample_time(200_000, torch.Generator().manual_seed(0))
    assert t.min() >= 0.001 and t.max() <= 1.0
    assert abs(t.mean().item() - (0.6 * 0.999 + 0.001)) < 3e-3  # Beta(1.5, 1) mean 0.6
    assert abs((t > 0.5).float().mean().item() - (1 - ((0.5 - 0.001) / 0.999) ** 1.5)) < 3e-3
    assert torch.equal(
        sample_time(8, torch.Generator().manual_seed(3)), sample_time(8, torch.Generator().manual_seed(3))
    )
    general = sample_time(100_000, torch.Generator().manual_seed(0), alpha=2.0, beta=3.0)
    assert abs(general.mean().item() - (0.4 * 0.999 + 0.001)) < 3e-3


def test_general_time_shapes_follow_beta_and_advance_the_generator() -> None:
    for a, b in ((2.0, 3.0), (0.5, 0.7)):  # shape < 1 too: the range where gamma samplers need a boost
        t = sample_time(20_000, torch.Generator().manual_seed(1), a, b).double()
        assert scipy.stats.kstest(((t - 0.001) / 0.999).numpy(), scipy.stats.beta(a, b).cdf).pvalue > 1e-3
    g = torch.Generator().manual_seed(5)
    first, second = sample_time(8, g, 2.0, 3.0), sample_time(8, g, 2.0, 3.0)
    assert not torch.equal(first, second)  # drawn from the generator's state, not its initial seed
    assert torch.equal(first, sample_time(8, torch.Generator().manual_seed(5), 2.0, 3.0))


def test_interpolation_convention_and_euler_exact_on_straight_path() -> None:
    a, eps = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    assert torch.allclose(interpolate(a, eps, torch.ones(2)), eps)  # t = 1 is noise
    assert torch.allclose(interpolate(a, eps, torch.zeros(2)), a)  # t = 0 is data
    u = velocity_target(a, eps)
    out = euler_sample(lambda x, t: u, eps, steps=10)
    assert torch.allclose(out, a, atol=1e-6)


# ---- losses ---------------------------------------------------------------------------------------------------

def test_flow_loss_ignores_padded_steps_and_dims() -> None:
    pred, target = torch.zeros(2, 3, 2), torch.ones(2, 3, 2)
    valid = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    dims = torch.tensor([[1, 0], [1, 1]], dtype=torch.bool)
    loss, count = masked_flow_loss(pred, target, valid, dims)
    assert count.tolist() == [2.0, 6.0] and loss.tolist() == [1.0, 1.0]
    pred[0, 2] = 100.0  # invalid step
    pred[0, :, 1] = 100.0  # padded dimension
    assert masked_flow_loss(pred, target, valid, dims)[0].tolist() == [1.0, 1.0]
    terms = {"flow": torch.tensor([1.0, 2.0]), "text": torch.tensor([0.0, 4.0]), "action_tokens": torch.zeros(2)}
    total = combine_losses(terms, torch.tensor([1.0, 0.5]), {"flow": 1.0, "text": 0.5, "action_tokens": 1.0}, 4)
    assert total.item() == pytest.approx((1.0 + 0.5 * (2.0 + 2.0)) / 4)


def test_text_layout_ids_kinds_and_truncation() -> None:
    tok = build_byte_tokenizer()
    layout = TextLayout(tok, 1283, 1024, 0, 12)
    ids, kinds, cut = layout.encode({"prompt": "hi", "target": "ok"})
    assert ids == [tok.bos_id, *tok.encode("hi"), *tok.encode("\n"), *tok.encode("ok"), tok.eos_id]
    assert kinds == [KIND_NONE] * 4 + [KIND_TEXT] * 3 and not cut
    assert tok.decode(ids) == "hi\nok"
    ids, kinds, _ = layout.encode({"instruction": "go", "action_tokens": [0, 5]})
    assert ids[-3:] == [1282, 1277, tok.eos_id] and kinds[-3:] == [KIND_ACTION] * 3
    ids, kinds, cut = layout.encode({"prompt": "a long prompt here", "target": "yes"})
    assert cut and len(ids) == 12 and ids[-4:] == [*tok.encode("yes"), tok.eos_id]
    conv = '[{"role": "user", "content": "what?"}, {"role": "assistant", "content": "cube"}]'
    ids, kinds, _ = TextLayout(tok, 1283, 0, 0, 48).encode({"conversation": conv})
    assert tok.decode([i for i, k in zip(ids, kinds) if k == KIND_TEXT]) == "cube"
    with pytest.raises(Exception, match="outside the model's action vocabulary"):
        layout.encode({"instruction": "go", "action_tokens": [1024]})


def test_text_tokens_bound_from_member_sizes() -> None:
    """The text budget is sized from shard-index member sizes alone: exact for the byte tokenizer
    (prompt/instruction, target, action tokens), a bound for a conversation (its JSON is longer)."""
    import numpy as np

    from cotrain.dataset.shards import encode_npy
    from cotrain.model.text import TEXT_MEMBERS, text_tokens_bound

    tok = build_byte_tokenizer()
    layout = TextLayout(tok, 1283, 1024, 0, 10_000)
    conv = '[{"role": "user", "content": "what?"}, {"role": "assistant", "content": "cube"}]'
    samples = [
        {"instruction": "pick up the red block and place it in bin 7"},
        {"prompt": "caption en", "target": "a cat"},
        {"prompt": "", "instruction": "fallback é"},
        {"instruction": "go", "action_tokens": [3, 4, 5]},
        {},
        {"conversation": conv},
    ]
    members = dict(zip(("prompt", "instruction", "target", "conversation", "action_tokens"), TEXT_MEMBERS))

    def size(sample: dict, field: str) -> int:
        if field not in sample:
            return -1
        value = sample[field]
        return len(encode_npy(np.asarray(value, np.int32))) if field == "action_tokens" else len(value.encode())

    sizes = np.array([[size(smp, field) for field in members] for smp in samples])
    bound = text_tokens_bound(sizes, len(tok.newline)).tolist()
    exact = [len(layout.encode(smp)[0]) for smp in samples]
    assert bound[:5] == exact[:5] and bound[0] == 45
    assert bound[5] >= exact[5]


# ---- the network ----------------------------------------------------------------------------------------------

def test_tiny_preset_size_and_unknown_preset() -> None:
    model, cfg, _ = tiny()
    assert count_parameters(model)["total"] < 5_000_000
    assert cfg.backbone_config["vision_config"]["image_size"] == 32
    with pytest.raises(ConfigError, match=r"unknown model preset 'tiyn' \(did you mean 'tiny'\?\)"):
        get_preset("tiyn")


@pytest.mark.parametrize("scheme", ["fan_in", "transformers"])
def test_random_init_scale_follows_the_scheme(scheme: str) -> None:
    # fan_in: N(0, 1/fan_in) for linears and N(0, 1/width) for embeddings; transformers: its N(0, 0.02).
    # (Pretrained presets are never redrawn: test_embeddings_and_prefix_pass_match_transformers
    # compares their forward with transformers' own on the same checkpoint.)
    model, cfg, _ = tiny(init_scheme=scheme)
    block = model.blocks[0]
    weights = {"backbone q": (block.backbone.self_attn.q_proj.weight, 64),
               "expert q": (block.expert.self_attn.q_proj.weight, 32),
               "backbone down": (block.backbone.mlp.down_proj.weight, 128),
               "projector": (model.projector.linear.weight, 32),
               "text embedding": (model.embed_tokens.weight, 64)}
    for name, (weight, fan_in) in weights.items():
        want = fan_in ** -0.5 if scheme == "fan_in" else 0.02
        assert weight.std().item() == pytest.approx(want, rel=0.15), name
    again, _, _ = tiny(init_scheme=scheme)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_init_scheme_is_a_training_option_with_the_library_default() -> None:
    from cotrain.train.config import make_train_config

    def scheme(**fields: object) -> str:
        train = make_train_config(mixture="m.yaml", steps=1, out="o", **fields)
        return with_overrides(get_preset("tiny"), **train.model.overrides()).init_scheme

    assert scheme() == "transformers" and scheme(init_scheme="fan_in") == "fan_in"
    with pytest.raises(ConfigError, match=r"init_scheme: Input should be 'transformers' or 'fan_in'"):
        scheme(init_scheme="xavier")


def test_time_beta_is_a_training_option_and_reaches_the_noise_draw() -> None:
    from cotrain.train.config import make_train_config

    def model_cfg(**fields: object):
        train = make_train_config(mixture="m.yaml", steps=1, out="o", **fields)
        return with_overrides(get_preset("tiny"), **train.model.overrides())

    assert model_cfg().time_beta == (1.5, 1.0)
    cfg = model_cfg(time_beta=[4, 1])  # as `--set time_beta=[4,1]` parses
    assert cfg.time_beta == (4.0, 1.0)
    t = sample_time(100_000, torch.Generator().manual_seed(0), *cfg.time_beta)
    assert abs(t.mean().item() - (0.8 * 0.999 + 0.001)) < 3e-3  # Beta(4, 1) mean 0.8
    with pytest.raises(ConfigError, match=r"time_beta \[0.0, 1.0\]: both Beta parameters must be > 0"):
        model_cfg(time_beta=[0, 1])


@pytest.mark.parametrize("backbone", ["gemma", "gemma2"])
def test_cached_sampling_equals_uncached(backbone: str) -> None:
    model, _, layout = tiny(backbone=backbone)
    model.eval()
    inputs, _ = build_inputs(batch(), layout)
    noise = torch.randn(4, 4, 3, generator=torch.Generator().manual_seed(2))
    cached = model.sample_actions(inputs, noise, steps=5, use_cache=True)
    uncached = model.sample_actions(inputs, noise, steps=5, use_cache=False)
    assert torch.allclose(cached, uncached, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(cached, noise)


def test_knowledge_insulation_same_values_no_flow_gradient_into_backbone() -> None:
    model, _, layout = tiny()
    inputs, _ = build_inputs(batch(), layout)
    g = torch.Generator().manual_seed(4)
    noise, t = torch.randn(4, 4, 3, generator=g), sample_time(4, g)
    plain = model(inputs, noise, t)
    plain["flow"].sum().backward()
    assert model.blocks[0].backbone.self_attn.k_proj.weight.grad.abs().sum() > 0
    model.zero_grad()
    ki_model, _, _ = tiny(knowledge_insulation=True)
    ki = ki_model(inputs, noise, t)
    assert torch.allclose(ki["flow"], plain["flow"], atol=1e-6)
    ki["flow"].sum().backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for b in ki_model.blocks for p in b.backbone.parameters())
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in ki_model.vision_tower.parameters())
    assert ki_model.blocks[0].expert.self_attn.q_proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("updates", [{}, {"arch": "pi05"}, {"knowledge_insulation": True}],
                         ids=["pi0", "pi05", "insulated"])
def test_k_flow_draws_equal_the_mean_of_k_single_draw_passes(updates: dict) -> None:
    """flow_samples: the prefix runs once, yet losses and gradients equal K separate passes'."""
    model, _, layout = tiny(**updates)
    inputs, _ = build_inputs(batch(), layout)
    g = torch.Generator().manual_seed(5)
    noise, t = torch.randn(4, 3, 4, 3, generator=g), sample_time(12, g).view(4, 3)
    multi = model(inputs, noise, t)
    singles = [model(inputs, noise[:, k], t[:, k]) for k in range(3)]
    assert torch.allclose(multi["flow"], sum(s["flow"] for s in singles) / 3, atol=1e-6)
    assert torch.equal(multi["flow_count"], singles[0]["flow_count"])
    assert torch.allclose(multi["text"], singles[0]["text"], atol=1e-6)
    assert not torch.allclose(singles[0]["flow"], singles[1]["flow"])  # the draws differ
    multi["flow"].sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    (sum(s["flow"] for s in singles) / 3).sum().backward()
    for name, p in model.named_parameters():  # None where the flow cannot reach (the last prefix queries)
        want = torch.zeros_like(p) if p.grad is None else p.grad
        assert torch.allclose(grads.get(name, torch.zeros_like(p)), want, atol=1e-5), name
    into_vision = any(g.abs().sum() > 0 for n, g in grads.items() if n.startswith("vision_tower"))
    assert into_vision != bool(updates.get("knowledge_insulation"))  # the K draws train the prefix too


def test_loss_falls_on_a_fixed_batch() -> None:
    model, cfg, layout = tiny()
    inputs, _ = build_inputs(batch(), layout)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    weights = {"flow": 1.0, "text": 1.0, "action_tokens": 1.0}
    g = torch.Generator().manual_seed(0)
    noise, t = torch.randn(4, 4, 3, generator=g), sample_time(4, g)  # fixed: the loss must fall
    history = []
    for _ in range(50):
        terms = model(inputs, noise, t)
        loss = combine_losses(terms, torch.ones(4), weights, 4)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append({k: v.detach().clone() for k, v in terms.items()} | {"total": loss.item()})
    assert history[-1]["total"] < 0.2 * history[0]["total"]
    assert history[-1]["text"][2] < 0.2 * history[0]["text"][2]
    assert history[-1]["action_tokens"][3] < 0.2 * history[0]["action_tokens"][3]
    assert history[-1]["flow"][0] < 0.5 * history[0]["flow"][0]
    assert math.isfinite(history[-1]["total"])


def test_lora_and_freeze_choose_trainable_parameters() -> None:
    model, _, _ = tiny(freeze="vision")
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.startswith(("vision_tower.", "projector.")) for n in names)
    assert any(n.startswith("blocks.0.backbone.") for n in names)
    model, _, _ = tiny(freeze="backbone")
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.startswith(("vision_tower.", "embed_tokens.", "blocks.0.backbone.")) for n in names)
    assert "blocks.0.expert.self_attn.q_proj.weight" in names and "action_out_proj.weight" in names
    pytest.importorskip("peft")
    model, _, layout = tiny(lora_rank=4)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    lora = {n for n in names if "lora_" in n}
    assert "blocks.1.backbone.mlp.down_proj.lora_A.default.weight" in lora
    assert all(".backbone." in n for n in lora) and len(lora) == 2 * 7 * 2
    assert not any(".backbone." in n and "lora_" not in n for n in names)
    inputs, _ = build_inputs(batch(), layout)
    g = torch.Generator().manual_seed(0)
    terms = model(inputs, torch.randn(4, 4, 3, generator=g), sample_time(4, g))
    terms["text"].sum().backward()
    assert model.blocks[0].backbone.self_attn.q_proj.lora_B.default.weight.grad.abs().sum() > 0


def test_model_inputs_shapes_from_batch() -> None:
    _, cfg, layout = tiny()
    inputs, truncated = build_inputs(batch(), layout)
    assert isinstance(inputs, ModelInputs) and truncated == 0
    assert inputs.state_valid.tolist() == [True, True, False, True]
    assert inputs.text_kind[2].tolist().count(KIND_TEXT) == len("a red cube") + 1
    assert inputs.text_kind[3].tolist().count(KIND_ACTION) == 4
    assert inputs.text_ids[3][inputs.text_kind[3] == KIND_ACTION].tolist()[:3] == [1282 - 5, 1282 - 7, 1282 - 1000]


# ---- PaliGemma checkpoints ----------------------------------------------------------------------------------

def write_paligemma(directory, backbone: str = "gemma") -> None:
    """A tiny random PaliGemma (or PaliGemma 2) checkpoint, written by transformers' save_pretrained."""
    import transformers

    from cotrain.model.backbone import random_backbone_config

    tok = build_byte_tokenizer()
    cfg = with_overrides(get_preset("tiny"), image_size=32, backbone=backbone, action_vocab_size=2048,
                         action_token_skip=128)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        transformers.PaliGemmaForConditionalGeneration(random_backbone_config(cfg, tok.vocab_size)).save_pretrained(
            directory)
    tok.save(directory)


@pytest.fixture(scope="module")
def paligemma_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("paligemma")
    for backbone in ("gemma", "gemma2"):
        write_paligemma(root / backbone, backbone)
    return {"gemma": root / "gemma", "gemma2": root / "gemma2"}


def _pretrained(directory, backbone: str):
    from cotrain.model.text import TextTokenizer

    preset = "paligemma2" if backbone == "gemma2" else "paligemma"
    cfg = with_overrides(get_preset(preset), image_size=32, max_cameras=1, horizon=4, action_dim=3, state_dim=4,
                         expert_width=32, expert_mlp=64)
    return build_vla(cfg, seed=0, tokenizer=TextTokenizer.load(directory), init_from=directory)


@pytest.mark.parametrize("backbone", ["gemma", "gemma2"])
def test_embeddings_and_prefix_pass_match_transformers(paligemma_dirs: dict, backbone: str) -> None:
    """Pins embedding scaling for the installed transformers (vla.md section 6) and our layers against its own."""
    import transformers
    from packaging.version import Version

    model, cfg = _pretrained(paligemma_dirs[backbone], backbone)
    model.eval()
    hf = transformers.PaliGemmaForConditionalGeneration.from_pretrained(
        paligemma_dirs[backbone], attn_implementation="eager").eval()
    embed = hf.model.language_model.embed_tokens
    ids = torch.tensor([[5, 77, 130]])
    if Version(transformers.__version__) >= Version("5.4"):
        # 5.4+: sqrt(width) lives inside embed_tokens, image features are no longer divided by it
        assert torch.allclose(embed(ids), embed.weight[ids] * math.sqrt(64))
        assert type(embed).__name__.endswith("ScaledWordEmbedding")
    else:  # 4.x: a plain lookup; the language model multiplies, image features were divided by sqrt(width)
        assert torch.equal(embed(ids), embed.weight[ids])
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 1, 3, 32, 32), dtype=torch.uint8, generator=g)
    text = torch.randint(3, 200, (2, 7), generator=g)
    seen = {}

    def capture(module: object, args: tuple, kwargs: dict) -> None:
        seen["x"] = kwargs.get("hidden_states", args[0] if args else None)

    hook = hf.model.language_model.layers[0].register_forward_pre_hook(capture, with_kwargs=True)
    ids = torch.cat([torch.full((2, model.image_tokens), hf.config.image_token_index), text], 1)
    with torch.no_grad():
        out = hf(input_ids=ids, pixel_values=images[:, 0].float() / 127.5 - 1, token_type_ids=torch.zeros_like(ids),
                 output_hidden_states=True)
    hook.remove()
    inputs = ModelInputs(images=images, camera_mask=torch.ones(2, 1, dtype=torch.bool), text_ids=text,
                         text_valid=torch.ones_like(text, dtype=torch.bool), text_kind=torch.zeros_like(text),
                         state=torch.zeros(2, 4), state_valid=torch.ones(2, dtype=torch.bool),
                         actions=torch.zeros(2, 4, 3), actions_valid=torch.ones(2, 4, dtype=torch.bool),
                         action_mask=torch.ones(2, 3, dtype=torch.bool))
    with torch.no_grad():
        ours, *_ = model.embed_prefix(inputs)
        hidden = model.prefix_hidden(inputs)
    assert torch.allclose(ours, seen["x"], atol=1e-6)  # what transformers feeds its first layer
    assert torch.allclose(hidden, out.hidden_states[-1], atol=1e-5)  # whole prefix pass, soft-capping included
    assert torch.equal(
        model.blocks[1].backbone.mlp.up_proj.weight, hf.model.language_model.layers[1].mlp.up_proj.weight
    )
    assert cfg.backbone_config["text_config"]["model_type"] == backbone


def test_checkpoint_directory_errors(paligemma_dirs: dict, tmp_path) -> None:
    import json
    import shutil

    from cotrain.model.backbone import check_checkpoint_dir

    def err(path, backbone: str = "gemma") -> str:
        with pytest.raises(ConfigError) as info:
            check_checkpoint_dir(path, backbone)
        assert "\n" not in str(info.value)
        return str(info.value)

    assert "directory not found" in err(tmp_path / "nope")
    assert "no config.json" in err(tmp_path)
    assert "the text model is 'gemma' but the preset needs 'gemma2' (use --model paligemma)" in err(
        paligemma_dirs["gemma"], "gemma2")
    broken = tmp_path / "broken"
    shutil.copytree(paligemma_dirs["gemma"], broken)
    (broken / "tokenizer.json").unlink()
    assert "no tokenizer.json" in err(broken)
    weights = broken / "model.safetensors"
    weights.rename(broken / "model-00001-of-00002.safetensors")
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (broken / "model.safetensors.index.json").write_text(json.dumps(index))
    assert "incomplete checkpoint: model-00002-of-00002.safetensors (listed in model.safetensors.index.json) is " \
           "missing" in err(broken)
    (broken / "model.safetensors.index.json").unlink()
    (broken / "pytorch_model.bin").write_bytes(b"x")
    assert "only PyTorch .bin weights; cotrain loads safetensors only" in err(broken)
    cfg = json.loads((paligemma_dirs["gemma"] / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**cfg, "model_type": "llava"}))
    assert "model_type is 'llava', not 'paligemma'" in err(broken)


def test_activation_checkpointing_gives_the_same_gradients() -> None:
    grads = []
    for ac in (False, True):
        model, _, layout = tiny(activation_checkpointing=ac)
        inputs, _ = build_inputs(batch(), layout)
        g = torch.Generator().manual_seed(5)
        terms = model(inputs, torch.randn(4, 4, 3, generator=g), sample_time(4, g))
        (terms["flow"].sum() + terms["text"].sum()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    assert all(torch.allclose(grads[0][n], grads[1][n], atol=1e-6) for n in grads[0])


def test_cpu_bf16_autocast_matches_fp32_and_takes_the_matmul_attention_path() -> None:
    from cotrain.model import mot

    model, cfg, layout = tiny("tiny-conv")  # no vision transformer: its attention is transformers' own
    inputs, _ = build_inputs(batch(), layout)
    g = torch.Generator().manual_seed(0)
    noise, t = torch.randn(4, 4, 3, generator=g), sample_time(4, g)
    ref = model(inputs, noise, t)
    calls: list[torch.dtype] = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(*args: object, **kw: object) -> torch.Tensor:
        calls.append(args[0].dtype)  # type: ignore[attr-defined]  # q, a tensor
        return sdpa(*args, **kw)  # type: ignore[arg-type]  # passed through unchanged

    mot.F.scaled_dot_product_attention = spy  # type: ignore[assignment]  # restored below
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(inputs, noise, t)
        (low["flow"].sum() + low["text"].sum()).backward()
    finally:
        mot.F.scaled_dot_product_attention = sdpa
    assert calls == []  # bf16 on CPU never reaches the fused kernel, ~4x slower in bf16 there
    for name in ("flow", "text", "action_tokens"):
        assert torch.allclose(low[name].float(), ref[name], rtol=0.05, atol=0.02), name
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(gr is None or gr.dtype == torch.float32 for gr in grads)
    assert sum(float(gr.abs().sum()) for gr in grads if gr is not None) > 0
