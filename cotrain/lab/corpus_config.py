"""`CorpusConfig`: the sizes and seed of a simulated corpus, for `cotrain sim generate` and the ablation data.

One frozen pydantic model holds every default once; `cotrain sim generate`'s options and the study
data of `cotrain ablate` (cotrain/lab/ablate/config.py, `StudyDataConfig`) both build on it. Only
pydantic is imported here, so the CLI can read the defaults without loading the simulator.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cotrain.errors import ConfigError

__all__ = ["CorpusConfig"]

# The simulator's robots and verbs (embodiments.ROBOTS, scene.VERBS): the checks below import them
# lazily, so these defaults are the only copies outside the simulator (a test keeps them equal).
_DEFAULT_TARGET = "sim_arm"
_DEFAULT_VERBS = ("pick", "push", "place")


class CorpusConfig(BaseModel):
    """Sizes of a generated corpus (each field is also a `cotrain sim generate` option)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    episodes: int = Field(64, description="Demonstrations of the target robot.")
    other_episodes: int = Field(64, description="Demonstrations of the other robot.")
    human_episodes: int = Field(32, description="Human hand demonstrations.")
    vl_images: int = Field(256, description="Rendered scenes with captions and questions.")
    questions_per_image: int = Field(3, description="Question-answer rows per scene.")
    image_size: int = Field(64, description="Square image side in pixels (even, >= 32).")
    seed: int = Field(0, description="Root seed of every episode and scene.")
    target: str = Field(_DEFAULT_TARGET, description="The evaluated robot: sim_arm or sim_gripper.")
    verbs: tuple[str, ...] = Field(_DEFAULT_VERBS, description="Demonstrated task verbs, comma-separated (pick "
                                                               "alone: easy variant).")
    recovery: float = Field(0.0, ge=0.0, le=1.0, description="Share of robot demos with one missed grasp the "
                                                             "expert recovers from (0: none).")

    @field_validator("verbs", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        """`--verbs pick,push` (each CLI value may itself be a comma list)."""
        if isinstance(value, str):
            value = [value]
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(s.strip() for v in value for s in v.split(",") if s.strip())
        return value

    @model_validator(mode="after")
    def _check(self) -> CorpusConfig:
        from cotrain.lab.sim.embodiments import ROBOTS
        from cotrain.lab.sim.scene import check_verbs

        try:
            check_verbs(self.verbs)
        except ValueError as exc:
            raise ConfigError(f"--verbs: {exc}") from None
        if self.target not in ROBOTS:
            raise ConfigError(f"--target {self.target!r}: must be one of {', '.join(ROBOTS)}")
        counts = {"--episodes": self.episodes, "--other-episodes": self.other_episodes,
                  "--human-episodes": self.human_episodes, "--vl-images": self.vl_images}
        for flag, value in counts.items():
            if value < 1:
                raise ConfigError(f"{flag} {value}: must be at least 1")
        if self.image_size < 32 or self.image_size % 2:
            raise ConfigError(f"--image-size {self.image_size}: must be an even number >= 32")
        return self
