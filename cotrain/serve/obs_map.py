"""Which keys of a client's observation are which cameras, the state and the prompt, per embodiment.

openpi clients send flat dicts whose keys each robot's harness chooses; the common ones (LIBERO,
DROID examples) are `observation/image`, `observation/wrist_image`, `observation/state` and
`prompt`, and those are the defaults here. A YAML file (`cotrain serve --obs-map FILE`) maps any
other naming onto the embodiment the server drives:

    embodiment: robot              # training source or embodiment (default: the run's only robot source)
    cameras: {front: agentview_image, wrist: eye_in_hand_image}   # or a list, in camera order
    state: robot_state             # null when the embodiment has no state
    prompt: task
    default_prompt: pick up the cube   # used when the prompt key is absent (otherwise an error)
    seed: noise_seed               # optional per-request noise seed key (absent: the server's --seed)

Images are uint8 [H, W, 3] or [3, H, W], or floats in [0, 1] (as openpi's own policies accept
them); any size, letterboxed to the model's like training images. A missing or mis-shaped key is a
one-line `DataError` naming the key, the camera and what was expected; the server sends it back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cotrain.errors import ConfigError, DataError, suggest
from cotrain.eval.policy import Observation, find_source

__all__ = ["ObsMapSpec", "ObservationMap", "bind_obs_map", "load_obs_map"]

# openpi's common keys for the first two cameras; further cameras default to observation/<camera>.
DEFAULT_CAMERA_KEYS = ("observation/image", "observation/wrist_image")
_WHERE = "observation"


class ObsMapSpec(BaseModel):
    """The observation mapping of one embodiment (YAML: `cotrain serve --obs-map`); see the module docstring."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    embodiment: str | None = Field(None, description="Training source or embodiment the server drives "
                                   "(default: the run's only source with actions).")
    cameras: list[str] | dict[str, str] | None = Field(None, description="Camera keys: a list in the embodiment's "
                                                       "camera order, or camera name -> key (default: openpi's).")
    state: str | None = Field("observation/state", description="Key of the proprioceptive state [Ds].")
    prompt: str = Field("prompt", description="Key of the task instruction (a string).")
    default_prompt: str | None = Field(None, description="Instruction used when the prompt key is absent.")
    seed: str | None = Field("noise_seed", description="Key of an optional int noise seed per request.")


def load_obs_map(path: Path) -> ObsMapSpec:
    """Read an observation-map YAML; a one-line ConfigError naming the file and field otherwise."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"--obs-map {path}: cannot read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--obs-map {path}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"--obs-map {path}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return ObsMapSpec.model_validate(raw)
    except ValidationError as exc:
        err = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
        field = ".".join(str(p) for p in err["loc"]) or "top level"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            valid = sorted(ObsMapSpec.model_fields)
            msg = f"unknown field{suggest(str(err['loc'][0]), valid)}; valid: {', '.join(valid)}"
        raise ConfigError(f"--obs-map {path}: {field}: {msg}") from None


@dataclass(frozen=True)
class ObservationMap:
    """An ObsMapSpec resolved against a run: turns one client observation into a `Policy` Observation.

    Args:
        source: the training source whose stats, cameras and state the server uses.
        embodiment: that source's embodiment.
        camera_keys: camera name -> observation key, in the embodiment's camera order.
        state_key: key of the state, None when the embodiment has none; state_dim its length.
        prompt_key, default_prompt, seed_key, default_seed: as in ObsMapSpec (default_seed: `--seed`).
    """

    source: str
    embodiment: str
    camera_keys: dict[str, str]
    state_key: str | None
    state_dim: int
    prompt_key: str
    default_prompt: str | None
    seed_key: str | None
    default_seed: int

    def describe(self) -> dict[str, Any]:
        """The keys a client must send (part of the server's metadata)."""
        return {"cameras": dict(self.camera_keys), "state": self.state_key, "prompt": self.prompt_key,
                "seed": self.seed_key}

    def observation(self, raw: Any) -> Observation:
        """The Policy observation of one decoded client message; DataError for missing or mis-shaped keys."""
        if not isinstance(raw, Mapping):
            raise DataError(_WHERE, f"expected a map of keys to values, got {type(raw).__name__}")
        images = {cam: _image(self._get(raw, key, f"camera {cam!r}"), key) for cam, key in self.camera_keys.items()}
        state = _state(self._get(raw, self.state_key, "state"), self.state_key, self.state_dim) \
            if self.state_key else np.zeros(0, np.float64)
        if self.prompt_key in raw or self.default_prompt is None:
            prompt = _prompt(self._get(raw, self.prompt_key, "prompt"), self.prompt_key)
        else:
            prompt = self.default_prompt
        seed = _seed(raw[self.seed_key], self.seed_key) if self.seed_key and self.seed_key in raw else self.default_seed
        return Observation(images, state, prompt, self.source, seed)

    def _get(self, raw: Mapping[str, Any], key: str, what: str) -> Any:
        if key not in raw:
            present = ", ".join(sorted(map(str, raw))) or "none"
            raise DataError(_WHERE, f"missing ({what} of {self.source!r}); the observation has keys: {present}",
                            key=key)
        return raw[key]


def _image(value: Any, key: str) -> np.ndarray:
    arr = np.asarray(value) if isinstance(value, (np.ndarray, list)) else None
    if arr is None or arr.ndim != 3 or 3 not in (arr.shape[0], arr.shape[-1]) or min(arr.shape) < 1:
        got = f"{arr.dtype} {list(arr.shape)}" if arr is not None else type(value).__name__
        raise DataError(_WHERE, f"expected an image, uint8 [H, W, 3] or [3, H, W] (or floats in [0, 1]); got {got}",
                        key=key)
    if arr.shape[-1] != 3:  # channels first, as openpi's ALOHA clients send them
        arr = np.moveaxis(arr, 0, -1)
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind != "f" or not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
        raise DataError(_WHERE, f"image of dtype {arr.dtype} must be uint8, or floats in [0, 1]", key=key)
    return (arr * 255).round().astype(np.uint8)


def _state(value: Any, key: str, dim: int) -> np.ndarray:
    arr = np.asarray(value) if isinstance(value, (np.ndarray, np.generic, list, tuple, int, float)) else None
    if arr is None or arr.dtype.kind not in "biuf" or arr.shape != (dim,):
        got = f"{arr.dtype} {list(arr.shape)}" if arr is not None else type(value).__name__
        raise DataError(_WHERE, f"expected the state as {dim} numbers [{dim}]; got {got}", key=key)
    if not np.isfinite(arr.astype(np.float64)).all():
        raise DataError(_WHERE, "state has non-finite values", key=key)
    return arr.astype(np.float64)


def _prompt(value: Any, key: str) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if not isinstance(value, str):
        raise DataError(_WHERE, f"expected the prompt as a string; got {type(value).__name__}", key=key)
    return value


def _seed(value: Any, key: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not 0 <= value < 2**63:
        raise DataError(_WHERE, f"expected the noise seed as an int in [0, 2**63); got {value!r}", key=key)
    return int(value)


def default_embodiment(norm: dict[str, Any]) -> str:
    """The run's only source with actions (or the one embodiment they share); an error listing them otherwise."""
    sources = {n: s for n, s in norm["sources"].items() if s.get("actions")}
    embodiments = {s.get("embodiment") for s in sources.values()}
    if len(sources) == 1:
        return next(iter(sources))
    if len(embodiments) == 1 and None not in embodiments:
        return str(next(iter(embodiments)))
    raise ConfigError(f"the run has several sources with actions ({', '.join(sorted(sources))}); choose one with "
                      f"--embodiment or `embodiment:` in --obs-map")


def _camera_keys(spec: ObsMapSpec, source: str, cameras: list[str]) -> dict[str, str]:
    if spec.cameras is None:
        return {cam: DEFAULT_CAMERA_KEYS[i] if i < len(DEFAULT_CAMERA_KEYS) else f"observation/{cam}"
                for i, cam in enumerate(cameras)}
    if isinstance(spec.cameras, list):
        if len(spec.cameras) > len(cameras):
            raise ConfigError(f"obs map cameras: {len(spec.cameras)} keys, but {source!r} has "
                              f"{len(cameras)} camera(s): {', '.join(cameras)}")
        return dict(zip(cameras, spec.cameras))
    for cam in spec.cameras:
        if cam not in cameras:
            raise ConfigError(f"obs map cameras: {cam!r} is not a camera of {source!r}{suggest(cam, cameras)}; "
                              f"cameras: {', '.join(cameras)}")
    return {cam: spec.cameras[cam] for cam in cameras if cam in spec.cameras}


def bind_obs_map(spec: ObsMapSpec, norm: dict[str, Any], *, embodiment: str | None = None,
                 default_seed: int = 0) -> ObservationMap:
    """Resolve `spec` against a run's stored norm stats (`LoadedRun.norm`); `embodiment` is `--embodiment`."""
    if embodiment and spec.embodiment and embodiment != spec.embodiment:
        raise ConfigError(f"--embodiment {embodiment!r} and the obs map's embodiment {spec.embodiment!r} differ; "
                          f"give one")
    name, source = find_source(norm, embodiment or spec.embodiment or default_embodiment(norm))
    if not source.get("actions"):
        raise ConfigError(f"source {name!r} has no actions to serve ({source.get('modality')})")
    state_dim = len(source["state_names"])
    if state_dim and spec.state is None:
        raise ConfigError(f"obs map state: null, but {name!r} has a state of {state_dim} values")
    return ObservationMap(source=name, embodiment=str(source.get("embodiment") or name),
                          camera_keys=_camera_keys(spec, name, list(source["cameras"])),
                          state_key=spec.state if state_dim else None, state_dim=state_dim, prompt_key=spec.prompt,
                          default_prompt=spec.default_prompt, seed_key=spec.seed, default_seed=default_seed)
