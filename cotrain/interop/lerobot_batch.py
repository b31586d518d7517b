"""`MixtureLoader` batches -> the batches LeRobot's datasets hand its policies.

Keys of an adapted batch (B rows, S image side, Ds / Da state / action dims padded to the mixture's
largest, H the action horizon):
- `observation.images.<camera>`: float32 [B, 3, S, S] in [0, 1], one key per camera slot (a row
  whose source lacks that camera gets a black image, as cotrain's own model sees it masked);
- `observation.state`: float32 [B, Ds], per-source normalised, padding 0;
- `action`: float32 [B, H, Da], per-source normalised, padding 0;
- `action_is_pad`: bool [B, H], true past an episode's end (cotrain's `actions_valid` negated) and on
  every step of a row without actions, so LeRobot's masked losses skip them;
- `task`: list[str], the instruction ("" where a sample has none);
- `source`: int64 [B], the mixture source of each row (LeRobot's processors drop it; it is for
  `to_robot_units` and per-source metrics).

Normalisation, and why it stays with cotrain. LeRobot's `NormalizerProcessorStep` holds one stats
entry per feature key, so it normalises every row of `action` with the same mean/std (or quantiles).
In a multi-embodiment mixture the padded action dims mean different things per source (a joint
angle in one, an end-effector delta in another) and some are padding for one source only: pooled
stats are wrong for every source, and a LeRobot pipeline cannot switch stats per row. So the loader
normalises state and actions per source, with each source's own manifest stats and the mixture's
`normalization` choice (padding stays exactly 0), and LeRobot is told that STATE and ACTION are
IDENTITY (`normalization_mapping`). Images are left to LeRobot, as raw [0, 1] pixels with VISUAL
MEAN_STD on ImageNet statistics (`image_stats`), which is what LeRobot's `use_imagenet_stats` does
for pretrained vision backbones; cotrain keeps no pixel statistics. A policy's predicted actions
therefore leave LeRobot's postprocessor in cotrain units; `to_robot_units` maps them back with the
row's own source stats.

Only torch and numpy are imported here (no lerobot, no cotrain data stack), so a LeRobot
environment can import this module from a cotrain checkout on `sys.path`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from cotrain.mix.collate import Batch
    from cotrain.mix.loader import MixtureLoader
    from cotrain.mix.normalize import StatsNormalizer

OBS_IMAGES = "observation.images."
OBS_STATE = "observation.state"
ACTION = "action"
ACTION_IS_PAD = "action_is_pad"
TASK = "task"
SOURCE = "source"
# LeRobot's ImageNet statistics (`datasets/transforms.py` IMAGENET_STATS), per channel, shape (3, 1, 1).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class FeatureSpec:
    """One input or output of a LeRobot policy: its FeatureType name and shape (LeRobot's
    `PolicyFeature(type=FeatureType[kind], shape=shape)`)."""

    kind: str  # "VISUAL", "STATE" or "ACTION"
    shape: tuple[int, ...]


@dataclass(frozen=True)
class LeRobotBatchAdapter:
    """Maps `MixtureLoader` batches to LeRobot batch dicts (keys in the module docstring).

    Args:
        cameras: LeRobot camera names, one per camera slot of the loader's batches.
        state_dim, action_dim, horizon, image_size: the loader's padded sizes.
        action_norms: per source, the normaliser the loader applied to its actions (None: raw units).
    """

    cameras: tuple[str, ...]
    state_dim: int
    action_dim: int
    horizon: int
    image_size: int
    action_norms: tuple[StatsNormalizer | None, ...] = ()

    @classmethod
    def for_loader(cls, loader: MixtureLoader, cameras: Sequence[str] | None = None) -> LeRobotBatchAdapter:
        """The adapter of `loader`'s batches. `cameras` names the camera slots; by default the sources'
        own camera names when every source lists the same ones, else `cam0`, `cam1`, ..."""
        from cotrain.errors import ConfigError

        c = loader.collator
        names = tuple(cameras) if cameras is not None else _default_cameras(loader, c.max_cameras)
        if len(names) != c.max_cameras or len(set(names)) != len(names):
            raise ConfigError(f"cameras {list(names)}: need {c.max_cameras} distinct names, one per camera slot "
                              f"of mixture {loader.mixture.spec.name!r}")
        return cls(names, c.state_dim, c.action_dim, c.horizon, c.image_size,
                   tuple(t.action_norm for t in loader.transforms))

    def features(self) -> dict[str, FeatureSpec]:
        """Inputs and outputs of a policy trained on these batches (LeRobot's `input_features` are the
        VISUAL and STATE entries, `output_features` the ACTION one; the action shape is per step)."""
        out = {OBS_IMAGES + cam: FeatureSpec("VISUAL", (3, self.image_size, self.image_size)) for cam in self.cameras}
        out[OBS_STATE] = FeatureSpec("STATE", (self.state_dim,))
        out[ACTION] = FeatureSpec("ACTION", (self.action_dim,))
        return out

    @staticmethod
    def normalization_mapping() -> dict[str, str]:
        """LeRobot `normalization_mapping` (FeatureType name -> NormalizationMode name) for these batches."""
        return {"VISUAL": "MEAN_STD", "STATE": "IDENTITY", "ACTION": "IDENTITY"}

    def image_stats(self) -> dict[str, dict[str, np.ndarray]]:
        """LeRobot `dataset_stats` for the camera keys: ImageNet mean/std, float32 (3, 1, 1)."""
        mean = np.asarray(IMAGENET_MEAN, np.float32).reshape(3, 1, 1)
        std = np.asarray(IMAGENET_STD, np.float32).reshape(3, 1, 1)
        return {OBS_IMAGES + cam: {"mean": mean.copy(), "std": std.copy()} for cam in self.cameras}

    def __call__(self, batch: Batch) -> dict[str, Any]:
        """The LeRobot batch of one `MixtureLoader` batch (tensors as the loader made them: images
        uint8 [B, C, 3, S, S], state [B, Ds], actions [B, H, Da], actions_valid [B, H], ...)."""
        import torch

        images = batch.images
        if images is None:  # only a worker's ring-buffer batch lacks images; the loader fills them in
            raise ValueError("a batch without images: pass batches as MixtureLoader yields them")
        out: dict[str, Any] = {OBS_IMAGES + cam: images[:, i].to(torch.float32).div_(255.0)
                               for i, cam in enumerate(self.cameras)}
        out[OBS_STATE] = batch.state.to(torch.float32)
        out[ACTION] = batch.actions.to(torch.float32)
        out[ACTION_IS_PAD] = ~batch.actions_valid.to(torch.bool)  # all True on rows without actions
        out[TASK] = [text or "" for text in batch.instruction]
        out[SOURCE] = batch.source.to(torch.int64)
        return out

    def to_robot_units(self, actions: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """Actions in the loader's normalised units [B, H, Da] -> each row's robot units, by its
        source's stats (dims a source does not have stay as given). Clipped values stay clipped."""
        import torch

        out = actions.detach().to("cpu", torch.float32).clone()
        src = source.detach().cpu().numpy()
        for s in np.unique(src).tolist():
            norm = self.action_norms[s] if s < len(self.action_norms) else None
            if norm is None:
                continue
            rows = torch.from_numpy(np.flatnonzero(src == s))
            d = len(norm.offset)
            out[rows, :, :d] = torch.from_numpy(norm.inverse(out[rows, :, :d].numpy()))
        return out


def _default_cameras(loader: MixtureLoader, slots: int) -> tuple[str, ...]:
    lists = {tuple(s.manifest.cameras) for s in loader.mixture.sources if s.manifest.cameras}
    if len(lists) == 1:
        (names,) = lists
        if len(names) == slots:
            return names
    return tuple(f"cam{i}" for i in range(slots))
