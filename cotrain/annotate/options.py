"""`AnnotateOptions`: the options of `cotrain annotate` and of the `annotations` converter.

Its own module, with pydantic and the converter option base only, so that the CLI builds its options
from this model (each default written once) without loading numpy on every `cotrain --help`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cotrain.convert.spec import ConvertOptions

__all__ = ["DEFAULT_PROMPT", "AnnotateOptions"]

DEFAULT_PROMPT = "answer en What is the robot doing?"


class AnnotateOptions(ConvertOptions):
    """Options of `cotrain annotate` (and of the `annotations` converter)."""

    name: str | None = Field(None, description="Dataset name in the manifest (default: with `cotrain annotate` the "
                                               "output folder name, with `convert annotations` the source's).")
    from_file: str | None = Field(None, description="Segment annotations: a JSONL file, a LeRobot dataset folder with "
                                                    "language columns, or AgiBot task_info JSON (file or folder).")
    format: Literal["auto", "jsonl", "lerobot", "agibot"] = Field("auto", description="Format of --from.")
    scripted: bool = Field(False, description="Compute motion-primitive phrases from the state/action deltas instead.")
    style: str = Field("subtask", description="LeRobot language style to read (persistent or event style).")
    uncovered: Literal["skip", "empty"] = Field("skip", description="Frames no segment covers: skip them or keep "
                                                                    "them with an empty target.")
    prompt: str = Field(DEFAULT_PROMPT, description="prompt.txt of every sample; {instruction} is replaced by the "
                                                    "sample's instruction.")
    scripted_from: Literal["state", "actions"] = Field("state", description="Scripted: deltas of the state over the "
                                                                            "next frames, or of the action chunk.")
    dims: str | None = Field(None, description="Scripted: ROLE=DIM list for x,y,z,roll,pitch,yaw,gripper (indices or "
                                               "names), or 'ecot' for 0..6; default: detected from the names.")
    window: int = Field(4, ge=2, description="Scripted: states per delta window (ECoT: 4, i.e. 3 steps ahead).")
    threshold: float = Field(0.03, gt=0, description="Scripted: deltas below this are no motion.")
    rotation_scale: float = Field(10.0, gt=0, description="Scripted: rotation deltas are divided by this.")
    gripper_increase: Literal["open", "close"] = Field("open", description="Scripted: what a growing gripper value "
                                                                           "means.")
