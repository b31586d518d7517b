"""Reference outputs from LeRobot's own PI0 / PI05 classes; run in the LeRobot environment (not cotrain's).

    python lerobot_reference.py make OUT            # tiny random PI0 + PI05 policies and their outputs
    python lerobot_reference.py check POLICY_DIR INPUTS OUT [...]  # from_pretrained exports, same outputs

`make` writes OUT/{pi0,pi05}/ (LeRobot `save_pretrained`: config.json + model.safetensors, plus the
pre/post-processor files with normalisation statistics) and OUT/{pi0,pi05}_ref.safetensors: the fixed
inputs and LeRobot's outputs on them. The Gemma variants are shrunk by patching
`get_gemma_config` (8 heads, as LeRobot hard-codes), the SigLIP tower through the PaliGemma config
factory, and the 257,152-row vocabulary to 1,024 rows after construction (all that LeRobot reads of
it is the embedding lookup). Weights are then redrawn N(0, 0.1), so the adaptive norms' zero-initialised
dense layers are exercised too. fp32 on CPU.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
import openpi_shim

openpi_shim.install()

from lerobot.configs.types import FeatureType, PolicyFeature  # noqa: E402  (after the shim patches transformers)
from lerobot.policies.pi0 import modeling_pi0  # noqa: E402  (after the shim patches transformers)
from lerobot.policies.pi05 import modeling_pi05  # noqa: E402  (after the shim patches transformers)

VOCAB, WIDTH, EXPERT, HEAD_DIM, DEPTH = 1024, 64, 32, 16, 2
VISION = {"hidden_size": 144, "num_hidden_layers": 1, "num_attention_heads": 2, "patch_size": 8}
SIDE, CAMERAS, HORIZON, STATE_DIM, ACTION_DIM, MAX_DIM = 32, 2, 4, 6, 5, 8


def _tiny_variant(variant: str):
    width, mlp = (WIDTH, 128) if variant == "gemma_2b" else (EXPERT, 64)
    return modeling_pi0.GemmaConfig(width=width, depth=DEPTH, mlp_dim=mlp, num_heads=8, num_kv_heads=1,
                                    head_dim=HEAD_DIM)


class _TinyConfigs(dict):
    """CONFIG_MAPPING stand-in: PaliGemma configs get a small SigLIP; everything else as usual."""

    def __init__(self, real):
        super().__init__()
        self.real = real

    def __getitem__(self, key):
        cls = self.real[key]
        if key != "paligemma":
            return cls

        def make():
            cfg = cls()
            for k, v in VISION.items():
                setattr(cfg.vision_config, k, v)
            return cfg
        return make


def _shrunk_init(init):
    def wrapped(self, *args, **kwargs):
        init(self, *args, **kwargs)
        _shrink_vocab(self)
    return wrapped


for mod in (modeling_pi0, modeling_pi05):
    mod.get_gemma_config = _tiny_variant
    mod.CONFIG_MAPPING = _TinyConfigs(mod.CONFIG_MAPPING)
    mod.PaliGemmaWithExpertModel.__init__ = _shrunk_init(mod.PaliGemmaWithExpertModel.__init__)


def _shrink_vocab(pwe) -> None:
    lm = pwe.paligemma.model.language_model
    lm.embed_tokens = nn.Embedding(VOCAB, WIDTH)
    pwe.paligemma.lm_head = nn.Linear(WIDTH, VOCAB, bias=False)
    pwe.paligemma.lm_head.weight = lm.embed_tokens.weight
    pwe.paligemma.model.multi_modal_projector.linear = nn.Linear(VISION["hidden_size"], WIDTH)
    pwe.gemma_expert.lm_head = nn.Linear(EXPERT, VOCAB, bias=False)
    for c in (pwe.paligemma.config.text_config, pwe.gemma_expert.config):
        c.vocab_size = VOCAB


def features():
    inputs = {f"observation.images.cam{i}": PolicyFeature(type=FeatureType.VISUAL, shape=(3, SIDE, SIDE))
              for i in range(CAMERAS)}
    inputs["observation.state"] = PolicyFeature(type=FeatureType.STATE, shape=(STATE_DIM,))
    return inputs, {"action": PolicyFeature(type=FeatureType.ACTION, shape=(ACTION_DIM,))}


def build(arch: str, seed: int):
    from lerobot.policies.pi0.configuration_pi0 import PI0Config
    from lerobot.policies.pi05.configuration_pi05 import PI05Config

    cls_cfg, cls = (PI0Config, modeling_pi0.PI0Policy) if arch == "pi0" else (PI05Config, modeling_pi05.PI05Policy)
    inputs, outputs = features()
    cfg = cls_cfg(device="cpu", dtype="float32", chunk_size=HORIZON, n_action_steps=HORIZON, max_state_dim=MAX_DIM,
                  max_action_dim=MAX_DIM, image_resolution=(SIDE, SIDE), input_features=inputs, output_features=outputs)
    policy = cls(cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in policy.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return policy.eval()


def fixed_inputs(arch: str) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    b, length = 2, 12
    valid = torch.ones(b, length, dtype=torch.bool)
    valid[1, 8:] = False
    return {
        "images": torch.randint(0, 256, (b, CAMERAS, 3, SIDE, SIDE), generator=gen, dtype=torch.uint8),
        "camera_mask": torch.tensor([[True, True], [True, False]]),
        "text_ids": torch.randint(0, VOCAB, (b, length), generator=gen) * valid,
        "text_valid": valid,
        "state": torch.randn(b, MAX_DIM, generator=gen),
        "actions": torch.randn(b, HORIZON, MAX_DIM, generator=gen),
        "noise": torch.randn(b, HORIZON, MAX_DIM, generator=gen),
        "x_t": torch.randn(b, HORIZON, MAX_DIM, generator=gen),
        "t": torch.tensor([0.9, 0.35]),
    }


@torch.no_grad()
def outputs(policy, arch: str, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    m = policy.model
    images = [x["images"][:, c].float() / 255.0 * 2.0 - 1.0 for c in range(CAMERAS)]
    masks = [x["camera_mask"][:, c] for c in range(CAMERAS)]
    lang, lmask = x["text_ids"], x["text_valid"]
    state = (x["state"],) if arch == "pi0" else ()
    emb, pad, att = m.embed_prefix(images, masks, lang, lmask)
    att2d = modeling_pi0.make_att_2d_masks(pad, att)
    m.paligemma_with_expert.paligemma.language_model.config._attn_implementation = "eager"
    _, cache = m.paligemma_with_expert.forward(attention_mask=m._prepare_attention_masks_4d(att2d),
                                               position_ids=torch.cumsum(pad, dim=1) - 1, past_key_values=None,
                                               inputs_embeds=[emb, None], use_cache=True)
    velocity = m.denoise_step(*state, prefix_pad_masks=pad, past_key_values=cache, x_t=x["x_t"], timestep=x["t"])
    chunk = m.sample_actions(images, masks, lang, lmask, *state, noise=x["noise"])
    loss = m.forward(images, masks, lang, lmask, *state, x["actions"], noise=x["noise"], time=x["t"])
    return {"prefix_embs": emb, "prefix_valid": pad, "velocity": velocity, "chunk": chunk, "loss": loss}


def _stats() -> dict[str, dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(3)
    out = {}
    for key, n in (("observation.state", STATE_DIM), ("action", ACTION_DIM)):
        lo = -torch.rand(n, generator=gen) - 0.5
        hi = torch.rand(n, generator=gen) + 0.5
        out[key] = {"mean": torch.randn(n, generator=gen), "std": torch.rand(n, generator=gen) + 0.5, "min": lo * 2,
                    "max": hi * 2, "q01": lo, "q99": hi}
    return out


def save_processors(policy, out: Path) -> None:
    from lerobot.processor import NormalizerProcessorStep, PolicyProcessorPipeline, UnnormalizerProcessorStep
    from lerobot.processor.converters import policy_action_to_transition, transition_to_policy_action

    cfg, stats = policy.config, _stats()
    pre = PolicyProcessorPipeline(steps=[NormalizerProcessorStep(
        features={**cfg.input_features, **cfg.output_features}, norm_map=cfg.normalization_mapping, stats=stats)],
        name="policy_preprocessor")
    post = PolicyProcessorPipeline(steps=[UnnormalizerProcessorStep(
        features=cfg.output_features, norm_map=cfg.normalization_mapping, stats=stats)], name="policy_postprocessor",
        to_transition=policy_action_to_transition, to_output=transition_to_policy_action)
    pre.save_pretrained(out)
    post.save_pretrained(out)


def pi05_prompts() -> dict[str, object]:
    """LeRobot's pi0.5 prompts (task + 256-bin state) for fixed states, including values outside [-1, 1]."""
    from lerobot.policies.pi05.processor_pi05 import Pi05PrepareStateTokenizerProcessorStep
    from lerobot.processor.core import TransitionKey

    state = torch.tensor([[-1.5, -1.0, -0.99, 0.0, 0.004, 0.5, 0.999, 1.0], [0.1, -0.2, 0.3, 2.0, 0, 0, 0, 0]])
    tasks = ["pick_up the cube\n", "  open the drawer "]
    step = Pi05PrepareStateTokenizerProcessorStep(max_state_dim=MAX_DIM)
    result = step({TransitionKey.OBSERVATION: {"observation.state": state},
                   TransitionKey.COMPLEMENTARY_DATA: {"task": tasks}})
    return {"state": state.tolist(), "tasks": tasks, "prompts": result[TransitionKey.COMPLEMENTARY_DATA]["task"]}


def make(out: Path) -> None:
    (out / "pi05_prompts.json").write_text(json.dumps(pi05_prompts()))
    for seed, arch in enumerate(("pi0", "pi05")):
        policy = build(arch, seed)
        policy.save_pretrained(out / arch)
        save_processors(policy, out / arch)
        x = fixed_inputs(arch)
        save_file({**{f"in.{k}": v.contiguous() for k, v in x.items()},
                   **{f"out.{k}": v.contiguous() for k, v in outputs(policy, arch, x).items()}},
                  str(out / f"{arch}_ref.safetensors"))


def check(policy_dir: Path, inputs: Path, out: Path) -> None:
    """Load an exported policy with LeRobot's from_pretrained and its processors; write the same outputs."""
    from lerobot.processor import PolicyProcessorPipeline

    arch = json.loads((policy_dir / "config.json").read_text())["type"]
    cls = modeling_pi0.PI0Policy if arch == "pi0" else modeling_pi05.PI05Policy
    policy = cls.from_pretrained(policy_dir, local_files_only=True).eval()
    stored = load_file(str(policy_dir / "model.safetensors"))
    mismatch = set(policy.state_dict()) ^ set(stored)
    tied = {"model.paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight",
            "model.paligemma_with_expert.paligemma.lm_head.weight"}
    assert mismatch <= tied and len(mismatch) <= 1, f"keys differ from LeRobot's model: {sorted(mismatch)[:5]}"
    state = policy.state_dict()
    assert all(torch.equal(state[k], v) for k, v in stored.items()), "from_pretrained did not load every tensor"
    post = PolicyProcessorPipeline.from_pretrained(policy_dir, config_filename="policy_postprocessor.json",
                                                   to_transition=_post_converters()[0], to_output=_post_converters()[1])
    x = {k[3:]: v for k, v in load_file(str(inputs)).items() if k.startswith("in.")}
    result = outputs(policy, arch, x)
    result["denormalised"] = post(result["chunk"][:, :, :ACTION_DIM].clone())
    result.update(preprocess(policy_dir, arch))
    save_file({k: v.contiguous() for k, v in result.items()}, str(out))


RAW_STATE = [[0.3, -0.2, 0.1, 0.05, -0.4, 0.25]]
RAW_TASK = "pick_up the cube"


def preprocess(policy_dir: Path, arch: str) -> dict[str, torch.Tensor]:
    """The exported preprocessor as LeRobot loads it (tokenizer swapped for the run's local tokenizer.json,
    via LeRobot's own `overrides`), applied to one raw observation: normalised state and prompt tokens."""
    import lerobot.policies.pi0.processor_pi0  # noqa: F401  (registers pi0_new_line_processor)
    import lerobot.policies.pi05.processor_pi05  # noqa: F401  (registers the pi05 state step)
    from lerobot.processor import PolicyProcessorPipeline
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=str(policy_dir.parent / f"{arch}_init" / "tokenizer.json"),
                                  pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")
    pre = PolicyProcessorPipeline.from_pretrained(policy_dir, config_filename="policy_preprocessor.json",
                                                  overrides={"tokenizer_processor": {"tokenizer": tok}})
    batch = {f"observation.images.cam{i}": torch.rand(3, SIDE, SIDE) for i in range(CAMERAS)}
    batch.update({"observation.state": torch.tensor(RAW_STATE[0]), "task": RAW_TASK})
    done = pre(batch)
    return {"pre.state": done["observation.state"], "pre.tokens": done["observation.language.tokens"],
            "pre.mask": done["observation.language.attention_mask"]}


def _post_converters():
    from lerobot.processor.converters import policy_action_to_transition, transition_to_policy_action

    return policy_action_to_transition, transition_to_policy_action


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    if sys.argv[1] == "make":
        make(Path(sys.argv[2]))
    else:  # check POLICY_DIR INPUTS OUT, repeated: one interpreter start for several exports
        args = sys.argv[2:]
        for i in range(0, len(args), 3):
            check(Path(args[i]), Path(args[i + 1]), Path(args[i + 2]))
