"""Model configuration: frozen pydantic models and the named presets (`tiny`, `tiny-conv`, `small`, `paligemma`, ...).

A preset fixes the architecture; data-dependent sizes (`horizon`, `action_dim`, `state_dim`,
`max_cameras`, `image_size`) may be left None and are filled from the mixture by the trainer
(train/compat.py `resolve_model_config`), so the same preset serves any embodiment. What comes out
of that step is a `ResolvedModelConfig`: the same fields, with the data sizes required ints, so the
network, the collator and the policy read them without a None check. The resolved config (including the
full transformers backbone config as a dict) is stored with every run, which is what lets
`Policy.load` rebuild the network offline without the original checkpoint directory.

Conventions follow openpi's pi0 (see ../shared/notes/vla.md): a PaliGemma backbone (SigLIP + Gemma)
paired layer by layer with a narrower Gemma action expert that shares depth, heads, KV heads and
head_dim; actions zero-padded to `action_dim`; 10 Euler steps at inference.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cotrain.errors import ConfigError, unknown_name

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class VisionSpec(BaseModel):
    """A SigLIP vision tower built at random init (tiny/small presets); front ends in vision_stem.py."""

    model_config = _FROZEN

    patch_size: int = Field(..., ge=1)
    width: int = Field(..., ge=8)
    depth: int = Field(..., ge=0, description="SigLIP layers; 0 feeds the embedded patches to the backbone.")
    mlp: int = Field(..., ge=8)
    heads: int = Field(..., ge=1)
    stem: Literal["patch", "conv"] = Field("patch", description="patch: SigLIP's linear patch embedding; "
                                           "conv: stride-2 3x3 convolutions down to the patch grid.")
    positions: Literal["learned", "sincos"] = Field("learned", description="learned: SigLIP's table at random "
                                                    "init; sincos: the same table started from a 2-D sine-cosine grid.")

    @model_validator(mode="after")
    def _front_end(self) -> VisionSpec:
        if self.stem == "conv" and (self.patch_size < 2 or self.patch_size & (self.patch_size - 1)):
            raise ValueError(f"stem 'conv' needs a power-of-two patch_size >= 2, got {self.patch_size}")
        if self.positions == "sincos" and self.width % 4:
            raise ValueError(f"positions 'sincos' needs a width divisible by 4, got {self.width}")
        return self


class StreamSpec(BaseModel):
    """A Gemma decoder stream built at random init; the expert copies heads/kv_heads/head_dim/depth."""

    model_config = _FROZEN

    width: int = Field(..., ge=8)
    depth: int = Field(..., ge=1)
    mlp: int = Field(..., ge=8)
    heads: int = Field(..., ge=1)
    kv_heads: int = Field(..., ge=1)
    head_dim: int = Field(..., ge=2)


class ModelConfig(BaseModel):
    """Everything needed to build the VLA (see module docstring)."""

    model_config = _FROZEN

    preset: str
    backbone: Literal["gemma", "gemma2"] = Field("gemma", description="PaliGemma (Gemma) or PaliGemma 2 (Gemma 2).")
    arch: Literal["pi0", "pi05"] = Field("pi0", description="pi0: a state token and the action-time MLP; pi05: "
                                         "the state as discrete prompt tokens and the time in adaptive norms.")
    pretrained: bool = Field(False, description="Weights come from a local Hugging Face directory (--init-from).")
    vision: VisionSpec | None = None
    text: StreamSpec | None = None
    expert_width: int = Field(..., ge=8, description="Action expert hidden size.")
    expert_mlp: int = Field(..., ge=8, description="Action expert MLP size.")
    image_size: int | None = Field(None, ge=8, description="Square image side (None: the mixture's).")
    max_cameras: int | None = Field(None, ge=1, description="Camera slots (None: the mixture's).")
    horizon: int | None = Field(None, ge=1, description="Action chunk length (None: the mixture's).")
    action_dim: int | None = Field(None, ge=1, description="Padded action dims (None: the mixture's).")
    state_dim: int | None = Field(None, ge=1, description="Padded state dims (None: the mixture's).")
    max_text_tokens: int = Field(48, ge=4, le=65_536, description="Text tokens per sample (prompt + target + "
                                 "action tokens).")
    action_vocab_size: int = Field(0, ge=0, description="Discrete action token ids accepted (0: none).")
    action_token_skip: int = Field(0, ge=0, description="Ids skipped at the vocab tail before action tokens.")
    flow_steps: int = Field(10, ge=1, description="Euler steps when sampling actions.")
    flow_samples: int = Field(1, ge=1, le=64, description="Flow (time, noise) draws per training sample; the "
                              "prefix runs once and the expert K times (1: pi0's single draw).")
    time_beta: tuple[float, float] = Field((1.5, 1.0), description="Beta(a, b) of the flow time (pi0: 1.5, 1).")
    flow_loss_weight: float = Field(1.0, ge=0)
    text_loss_weight: float = Field(1.0, ge=0)
    action_token_loss_weight: float = Field(1.0, ge=0)
    knowledge_insulation: bool = Field(False, description="The expert sees detached backbone keys and values.")
    freeze: Literal["none", "vision", "backbone"] = Field("none", description="Frozen: vision (SigLIP + projector) "
                                                          "or backbone (+ the language layers).")
    lora_rank: int = Field(0, ge=0, description="LoRA rank on the backbone's language layers (0: off).")
    lora_alpha: float | None = Field(None, gt=0, description="LoRA alpha (default: the rank).")
    activation_checkpointing: bool = Field(False, description="Recompute each layer in the backward pass.")
    init_scheme: Literal["transformers", "fan_in"] = Field(
        "transformers", description="Random init of a random-init preset: 'transformers' keeps the library's "
        "N(0, 0.02), calibrated for widths near 2048; 'fan_in' draws linear weights from N(0, 1/fan_in) and "
        "embeddings from N(0, 1/width), which narrow presets learn binding with (docs/training.md).")
    backbone_config: dict[str, Any] | None = Field(None, description="Resolved transformers PaliGemmaConfig dict.")
    text_vocab_size: int | None = Field(None, ge=1, description="Text tokenizer size (tiny/small; set at build).")

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        if not self.pretrained and (self.vision is None or self.text is None):
            raise ValueError(f"preset {self.preset!r}: a random-init preset needs both 'vision' and 'text'")
        if min(self.time_beta) <= 0:
            raise ValueError(f"time_beta {list(self.time_beta)}: both Beta parameters must be > 0")
        if self.arch == "pi05" and self.backbone != "gemma":
            raise ValueError("arch 'pi05' (adaptive expert norms) is built on the Gemma backbone only")
        if self.text is not None and self.text.heads % self.text.kv_heads:
            raise ValueError(f"heads {self.text.heads} is not a multiple of kv_heads {self.text.kv_heads}")
        return self

    @property
    def data_resolved(self) -> bool:
        return None not in (self.image_size, self.max_cameras, self.horizon, self.action_dim, self.state_dim)

    def resolved(self) -> ResolvedModelConfig:
        """This config as a ResolvedModelConfig; a ConfigError names the data size still open."""
        missing = [name for name in DATA_SIZES if getattr(self, name) is None]
        if missing:
            raise ConfigError(f"model {self.preset!r}: {', '.join(missing)} not set (the trainer fills them from "
                              f"the mixture)")
        return ResolvedModelConfig.model_validate(self.model_dump())


DATA_SIZES = ("image_size", "max_cameras", "horizon", "action_dim", "state_dim")


class ResolvedModelConfig(ModelConfig):
    """A ModelConfig whose data sizes are known: what the network, collator and Policy are built from.

    Produced once per run (`ModelConfig.resolved()`, after the mixture fills the sizes) and stored as
    the run's `model_config.json`; the constraints are the ModelConfig's own.
    """

    image_size: int = Field(..., ge=8, description="Square image side.")
    max_cameras: int = Field(..., ge=1, description="Camera slots.")
    horizon: int = Field(..., ge=1, description="Action chunk length.")
    action_dim: int = Field(..., ge=1, description="Padded action dims.")
    state_dim: int = Field(..., ge=1, description="Padded state dims.")


_TINY = ModelConfig(
    preset="tiny",
    vision=VisionSpec(patch_size=8, width=32, depth=2, mlp=64, heads=2),
    text=StreamSpec(width=64, depth=2, mlp=128, heads=2, kv_heads=1, head_dim=16),
    expert_width=32, expert_mlp=64, max_text_tokens=32, action_vocab_size=1024,
)
# `tiny` at width 128 with the convolutional front end, no SigLIP layers and flow times drawn nearer
# the noisy end: the from-scratch variant whose grasps follow the named object in the simulator
# (docs/ablation.md, "What makes a from-scratch VLA look"); about 4x the tiny model's step time on CPU.
_TINY_CONV = ModelConfig(
    preset="tiny-conv",
    vision=VisionSpec(patch_size=8, width=128, depth=0, mlp=256, heads=4, stem="conv", positions="sincos"),
    text=StreamSpec(width=128, depth=3, mlp=256, heads=4, kv_heads=4, head_dim=32),
    expert_width=64, expert_mlp=128, max_text_tokens=64, action_vocab_size=1024, init_scheme="fan_in",
    time_beta=(4.0, 1.0),
)
_SMALL = ModelConfig(
    preset="small",
    vision=VisionSpec(patch_size=16, width=384, depth=6, mlp=1536, heads=6),
    text=StreamSpec(width=512, depth=8, mlp=2048, heads=8, kv_heads=1, head_dim=64),
    expert_width=256, expert_mlp=1024, max_text_tokens=48, action_vocab_size=1024,
)
# openpi pi0: gemma_2b backbone + gemma_300m expert (width 1024, mlp 4096), actions padded to 32 dims,
# horizon 50, prompt 48 tokens; FAST ids skip the 128 <seg> tokens at the vocabulary tail.
_PALIGEMMA = ModelConfig(
    preset="paligemma", pretrained=True, expert_width=1024, expert_mlp=4096, action_dim=32, state_dim=32,
    horizon=50, max_text_tokens=48, action_vocab_size=2048, action_token_skip=128,
)
_PALIGEMMA2 = _PALIGEMMA.model_copy(update={"preset": "paligemma2", "backbone": "gemma2"})
# PaliGemma-3B-sized at random init (SigLIP So400m/14 at 224 + Gemma 2B + the 300M expert), for benchmarks
# and smoke tests without a checkpoint. Its byte tokenizer keeps the embedding small (2,435 rows, not 257,216).
_PALIGEMMA_RANDOM = ModelConfig(
    preset="paligemma-random",
    vision=VisionSpec(patch_size=14, width=1152, depth=27, mlp=4304, heads=16),
    text=StreamSpec(width=2048, depth=18, mlp=16384, heads=8, kv_heads=1, head_dim=256),
    expert_width=1024, expert_mlp=4096, image_size=224, action_dim=32, state_dim=32, horizon=50,
    max_text_tokens=48, action_vocab_size=2048, action_token_skip=128,
)

# openpi / LeRobot pi0 and pi0.5 bases (--init-from a LeRobot policy directory or openpi's PyTorch
# conversion). Every size here is a placeholder: the checkpoint's config and tensor shapes replace them
# (pi_import.py), so shrunken test checkpoints load too. No discrete action tokens unless asked for.
_PI0 = ModelConfig(
    preset="pi0", pretrained=True, expert_width=1024, expert_mlp=4096, max_text_tokens=48,
)
_PI05 = _PI0.model_copy(update={"preset": "pi05", "arch": "pi05", "max_text_tokens": 200})
PI_PRESETS = ("pi0", "pi05")

PRESETS: dict[str, ModelConfig] = {c.preset: c for c in (_TINY, _TINY_CONV, _SMALL, _PALIGEMMA, _PALIGEMMA2,
                                                         _PALIGEMMA_RANDOM, _PI0, _PI05)}


_M = TypeVar("_M", bound=ModelConfig)


def get_preset(name: str) -> ModelConfig:
    """The preset called `name`; unknown names raise ConfigError with a suggestion."""
    if name not in PRESETS:
        raise unknown_name("model preset", name, PRESETS)
    return PRESETS[name]


def with_overrides(cfg: _M, **updates: Any) -> _M:
    """A validated copy of the same type with `updates` (None values are ignored); errors become one-line
    ConfigErrors."""
    clean = {k: v for k, v in updates.items() if v is not None}
    if not clean:
        return cfg
    unknown = sorted(set(clean) - set(ModelConfig.model_fields))
    if unknown:
        raise unknown_name("model field", unknown[0], ModelConfig.model_fields)
    try:
        return type(cfg).model_validate({**cfg.model_dump(), **clean})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "model"
        raise ConfigError(f"model {cfg.preset!r}: {where}: {err['msg'].removeprefix('Value error, ')}") from None
