"""The settings of an ablation study: `AblationConfig` (the `cotrain ablate` options) and `StudyDataConfig`.

Frozen pydantic models with every default written once: `cotrain ablate` builds its options from
`AblationConfig` (cotrain/cli/ablate_cmd.py), and the study data's corpus sizes are a `CorpusConfig`,
the model `cotrain sim generate` uses. Only pydantic is imported here, so `cotrain --help` stays light.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cotrain.errors import ConfigError
from cotrain.lab.corpus_config import CorpusConfig

__all__ = ["HELDOUT_SEED_OFFSET", "STUDY_TRAIN_DEFAULTS", "AblationConfig", "StudyDataConfig", "study_precision"]

HELDOUT_SEED_OFFSET = 1000

# Trainer settings of every run unless `train_overrides` says otherwise. The tiny model is trained at a
# higher LR than the trainer's default (1e-4, meant for pretrained backbones); 160 text tokens fit the
# longest sim caption (135 bytes with the byte tokenizer) and the FAST tokens after an instruction.
STUDY_TRAIN_DEFAULTS: Mapping[str, Any] = MappingProxyType({
    "lr": 1e-3, "warmup_steps": 50, "max_text_tokens": 160, "save_every": 200, "keep_checkpoints": 1,
    "log_every": 10, "tensorboard": False, "progress": False,
    # Captions beside instructions: two passes grouped by text length, same losses (docs/training.md).
    "optim.length_split": True,
})


class StudyDataConfig(CorpusConfig):
    """The study corpus: the training corpus's `CorpusConfig` fields, plus the held-out corpus's size and
    the FAST vocabulary of the target robot's action tokens. `image_size` should match the mixtures'."""

    # Study sizes (docs/ablation.md, "The study data"): pick tasks only, so that a robot-only policy
    # trained for the mixtures' steps succeeds on most seen layouts and unseen differences can show.
    # 2,048 target demos: at the mixtures' 3,000 steps of batch 32 the baseline solved 40/96 seen
    # episodes with them against 12/48 with 1,024 (docs/ablation.md, "Session 13").
    episodes: int = Field(2048, description="Demonstrations of the target robot.")
    other_episodes: int = Field(512, description="Demonstrations of the other robot.")
    human_episodes: int = Field(256, description="Human hand demonstrations.")
    vl_images: int = Field(1024, description="Rendered scenes with captions and questions.")
    verbs: tuple[str, ...] = Field(("pick",), description="Demonstrated task verbs, comma-separated.")
    heldout_episodes: int = Field(16, description="Target-robot episodes of the held-out corpus.")
    heldout_vl_images: int = Field(32, description="Vision-language scenes of the held-out corpus.")
    tokenizer_vocab: int = Field(1024, description="FAST vocabulary size of the action tokens.")

    def train_corpus(self) -> CorpusConfig:
        return CorpusConfig(**{name: getattr(self, name) for name in CorpusConfig.model_fields})

    def heldout_corpus(self) -> CorpusConfig:
        """Another seed (new layouts, new scenes; no generator shared with training), one demo of the others."""
        return CorpusConfig(**{**self.train_corpus().model_dump(), "episodes": self.heldout_episodes,
                               "other_episodes": 1, "human_episodes": 1, "vl_images": self.heldout_vl_images,
                               "seed": self.seed + HELDOUT_SEED_OFFSET})


class AblationConfig(BaseModel):
    """An ablation study. The fields with a description are `cotrain ablate`'s options (same names).

    `mixtures` are YAML files and/or folders (every *.yaml directly inside, sorted by name);
    `train_overrides` are TrainConfig fields over STUDY_TRAIN_DEFAULTS (`--set`, e.g. {"lr": 3e-4}).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    mixtures: tuple[str, ...]
    out: Path = Field(Path("ablation-out"), description="Study folder: runs, results.csv/.md, plots.")
    seeds: int = Field(3, description="Seeds per mixture (0..K-1).")
    steps: int | None = Field(None, description="Steps per run, phases rescaled (default: each mixture's own total).")
    batch_size: int | None = Field(None, description="Samples per step of every run (default: each mixture's own).")
    # 384 = 96 per split: a seed's rate on one split swings by sampling alone (binomial SD 0.07 at 40 % with
    # 48, 0.05 with 96), and one policy scored 10/48 on one draw of 48 seen episodes and 30/192 on four
    # (docs/ablation.md, "Session 16"); in lockstep (sim/episode.py) 384 episodes take ~30 s of a run's ~10-20 min.
    episodes: int = Field(384, description="Closed-loop simulator episodes per run (round-robin over the splits).")
    train_episodes: int = Field(48, description="Further episodes on the layouts of the target robot's own training "
                                                "demos (memorisation check; at most their number; 0: none).")
    # 4, not the evaluator's 8: the same fine-tuned baseline solved 13/48 seen episodes replanning every
    # 4 steps against 5/48 every 8 (docs/ablation.md, "Session 12").
    replan_steps: int = Field(4, description="Actions executed from each predicted chunk before the policy is "
                                             "asked again (closed-loop evaluation).")
    eval_samples: int = Field(128, description="Held-out samples per offline eval dataset.")
    eval_data: tuple[Path, ...] = Field((), description="Held-out datasets for the offline eval (repeatable; default: "
                                                       "the study data's held-out sets).")
    baseline: str | None = Field(None, description="Mixture name the others are tested against (default: baseline, "
                                                   "else the first).")
    model: str = Field("tiny-conv", description="Model preset.")
    init_from: str = Field("sim-paligemma", description="Backbone to start from: sim-paligemma (the shipped "
                                                         "simulator backbone), none (random init) or a checkpoint dir.")
    prepare: bool = Field(True, description="Make the simulated study data when the mixtures' datasets are missing.")
    jobs: int = Field(1, description="Runs at the same time, one process each (2 on 2 cores).")
    threads: int = Field(1, description="Torch threads per run (the tiny model gains nothing from a second one).")
    eval_seed: int = 0  # simulator evaluation seed: the same episodes for every run
    target_source: str = "target"  # the target robot's source name in every mixture (the simulator drives it)
    train_overrides: Mapping[str, Any] = Field(default_factory=dict)
    data: StudyDataConfig = Field(default_factory=StudyDataConfig)  # corpus sizes when the study data is prepared

    @model_validator(mode="after")
    def _check(self) -> AblationConfig:
        checks = {"--seeds": self.seeds, "--episodes": self.episodes, "--eval-samples": self.eval_samples,
                  "--replan-steps": self.replan_steps,
                  "--jobs": self.jobs, "--threads": self.threads}
        for flag, value in checks.items():
            if value < 1:
                raise ConfigError(f"{flag} {value}: must be at least 1")
        if self.train_episodes < 0:
            raise ConfigError(f"--train-episodes {self.train_episodes}: must be 0 (none) or more")
        for flag, opt in {"--steps": self.steps, "--batch-size": self.batch_size}.items():
            if opt is not None and opt < 1:
                raise ConfigError(f"{flag} {opt}: must be at least 1")
        if not self.mixtures:
            raise ConfigError("give at least one mixture file or folder")
        reserved = {"mixture", "out", "steps", "resume", "model", "model.preset", "seed", "init_from",
                    "model.init_from"} & set(self.train_overrides)
        if reserved:
            raise ConfigError(f"--set {sorted(reserved)[0]}: the study sets this itself per run")
        return self

    def train_fields(self) -> dict[str, Any]:
        from cotrain.lab.sim.pretrain_config import resolve_backbone

        init = resolve_backbone(self.init_from)  # absent for random init, as in studies made before it existed
        return {**STUDY_TRAIN_DEFAULTS, **study_precision(), **self.train_overrides,
                **({"init_from": init} if init else {})}


def study_precision() -> dict[str, str]:
    """bf16 autocast on a CPU with bf16 matrix units (0.71x the fp32 step, same success: docs/ablation.md),
    else the trainer's own choice (bf16 on a GPU, fp32 on other CPUs). A run stores it, so a study folder
    continued on a machine that chooses otherwise is refused rather than mixed."""
    import torch

    from cotrain.train.config import cpu_bf16_pays

    return {"precision": "bf16"} if not torch.cuda.is_available() and cpu_bf16_pays() else {}
