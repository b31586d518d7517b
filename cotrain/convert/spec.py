"""What a converter is: a name, an options model, and three functions over "units".

A unit is the smallest piece of a source converted on its own (a robot episode, a batch of images).
`list_units` enumerates them cheaply and in a deterministic order; `describe` states what the
dataset holds; `convert_unit` turns one unit into samples through a `UnitSink`. The pipeline does
everything else (sharding, workers, resume, stats, manifest), so a converter is only format logic.

A unit's `ref` tells the converter where the unit is in the source. Each converter declares its own
TypedDict of JSON values for it and types its functions with it (`list[Unit[LbmRef]]`,
`Unit[LbmRef]`), so a `Converter[LbmRef]` is checked end to end; the pipeline never reads a ref, it
only hands it to the worker that converts the unit, so a plugin's plain-dict ref works unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypeVar

from cotrain.registry import Registry

if TYPE_CHECKING:  # only a type: importing it would load numpy for every `cotrain --help`
    from cotrain.dataset.norm_stats import EpisodeLowdim


class ConvertOptions(BaseModel):
    """Options shared by every converter; all of them shape the output, so all are recorded."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str | None = Field(None, description="Dataset name in the manifest (default: the source folder name).")
    shard_size: int = Field(1000, ge=1, description="Target samples per shard (whole units per shard).")
    on_bad_episode: Literal["raise", "skip"] = Field(
        "raise", description="On malformed input: stop with an error, or skip the episode and list it."
    )


class RobotOptions(ConvertOptions):
    """Options of robot-episode converters."""

    embodiment: str = Field(..., description="Embodiment name recorded with every sample, e.g. franka, aloha.")
    horizon: int = Field(16, ge=1, description="Length H of the action chunk stored with each frame.")
    cameras: str | None = Field(
        None, description="Comma list selecting cameras, each NAME or NAME=NEW to rename (default: all)."
    )
    image_size: str | None = Field(None, description="Resize bound N or HxW, keeping the aspect ratio.")
    fps: float | None = Field(None, gt=0, description="Resample episodes to this rate (nearest frame before).")
    task: str | None = Field(None, description="Instruction text that overrides the source's task.")
    jpeg_quality: int = Field(90, ge=1, le=100, description="JPEG quality of stored camera frames.")
    no_images: bool = Field(False, description="Convert state and actions only, without camera frames.")


class VisionLanguageOptions(ConvertOptions):
    """Options of image-text converters."""

    image_size: str | None = Field(None, description="Resize bound N or HxW, keeping the aspect ratio.")
    jpeg_quality: int = Field(90, ge=1, le=100, description="JPEG quality when images are re-encoded.")
    prompt: str = Field("caption en", description="Prompt stored with captions (PaliGemma's caption prefix).")


class RunOptions(BaseModel):
    """How to run a conversion; none of these may change the output bytes, so none are recorded."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    workers: int = Field(1, ge=1, description="Processes converting units in parallel.")
    decode_threads: int = Field(
        0, ge=0, description="Video decoder threads per worker; 0: the usable cores divided by --workers "
        "(with one worker, FFmpeg's own choice).")
    num_parts: int = Field(1, ge=1, description="Split the shard plan into this many disjoint parts (job arrays).")
    part: int = Field(0, ge=0, description="Which part this run converts (0-based).")
    backend: Literal["process", "ray"] = Field("process", description="Where unit tasks run.")
    overwrite: bool = Field(False, description="Replace an existing or unfinished conversion with other arguments.")
    progress: bool | None = Field(None, description="Progress bar: default on when stderr is a terminal.")


# A converter's unit locator: a TypedDict of JSON values, declared by each converter (`Unit[LbmRef]`).
# The framework never reads it; it only carries it to the worker that converts the unit.
RefT = TypeVar("RefT", bound=Mapping[str, object], default=Mapping[str, Any])


@dataclass(frozen=True)
class Unit(Generic[RefT]):
    """One independently converted piece of the source.

    Args:
        index: position in the sorted unit list; part of every sample key, so keys are unique.
        id: the source's own id (episode id, file name), recorded in sample metadata.
        est_samples: expected sample count, used only to balance shard sizes.
        ref: JSON-like locator the converter needs to load the unit (paths, row ranges, ...); its
            type is the converter's own (a TypedDict), opaque to the framework.
    """

    index: int
    id: str
    est_samples: int
    ref: RefT = field(default_factory=dict)  # type: ignore[assignment]  # {} only where RefT has no required key


@dataclass(frozen=True)
class DatasetInfo:
    """What the converted dataset holds, for the manifest."""

    modality: str
    embodiment: str | None = None
    state_names: Sequence[str] = ()
    action_names: Sequence[str] = ()
    fps: float | None = None
    horizon: int | None = None
    cameras: Sequence[str] = ()
    image_size: tuple[int, int] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


class UnitSink(Protocol):
    """Receives one unit's samples; keys are assigned by the pipeline (unit index + position)."""

    def add(self, members: Mapping[str, bytes]) -> None: ...

    def add_episode(self, lowdim: EpisodeLowdim | None) -> None: ...


@dataclass(frozen=True)
class Converter(Generic[RefT]):
    """A registered source format; `RefT` is the type of its units' `ref`.

    The functions take the converter's own options model (a subclass of `options`, typed `Any` here).
    """

    name: str
    summary: str
    options: type[ConvertOptions]
    list_units: Callable[[Path, Any], list[Unit[RefT]]]
    describe: Callable[[Path, Any, Sequence[Unit[RefT]]], DatasetInfo]
    convert_unit: Callable[[Path, Any, Unit[RefT], UnitSink], None]


CONVERTERS: Registry[Converter] = Registry("converters")
