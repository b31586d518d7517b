"""A pi0 / pi0.5 base checkpoint's normalisation statistics, reused for an embodiment it was trained on.

By default a run normalises every source with the statistics of its own converted data. With
`--base-stats SOURCE=ASSET` a source takes the base checkpoint's instead, so fine-tuning on an
embodiment the base already knows keeps the exact input/output scaling the base learned. Assets:
- openpi (and its PyTorch conversion): `assets/<asset_id>/norm_stats.json`,
  `{"norm_stats": {"state": {mean, std, q01, q99}, "actions": {...}}}`; the asset id is the directory
  path below `assets/` (e.g. `trossen`, `physical-intelligence/libero`);
- LeRobot: the normaliser step of `policy_preprocessor.json` and its `state_file` safetensors
  (`observation.state.{mean,std,min,max,q01,q99}`, `action.{...}`); asset id `lerobot`.
Statistics longer than the source's dims are cut to its first dims (openpi pads before normalising
too); shorter ones are refused. Fields a producer does not store are filled from the nearest it does
(min/max from q01/q99, q02/q98 from q01/q99); normalisation reads only mean/std or q01/q99. The
choice is recorded in the run's `norm_stats.json` (`base_stats`), and the statistics themselves in
its per-source records, so `Policy` and `export lerobot` use them too.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from cotrain.dataset.manifest import ActionStats, DimStats
from cotrain.errors import ConfigError

__all__ = ["apply_base_stats", "base_stats_assets"]

_FIELDS = ("mean", "std", "min", "max", "q01", "q99")


def _lerobot_assets(root: Path) -> dict[str, dict[str, dict[str, list[float]]]]:
    from safetensors.numpy import load_file

    pre = root / "policy_preprocessor.json"
    if not pre.is_file():
        return {}
    try:
        steps = json.loads(pre.read_text(encoding="utf-8"))["steps"]
        step = next(s for s in steps if s.get("registry_name") == "normalizer_processor" and s.get("state_file"))
        tensors = load_file(str(root / Path(step["state_file"]).name))
    except (OSError, ValueError, KeyError, StopIteration) as exc:
        raise ConfigError(f"{pre}: no readable normaliser statistics: {exc!r}") from None
    out: dict[str, dict[str, list[float]]] = {}
    for what, key in (("state", "observation.state"), ("actions", "action")):
        out[what] = {f: tensors[f"{key}.{f}"].tolist() for f in _FIELDS if f"{key}.{f}" in tensors}
    return {"lerobot": out}


def _openpi_assets(root: Path) -> dict[str, dict[str, dict[str, list[float]]]]:
    out = {}
    for path in sorted((root / "assets").glob("**/norm_stats.json")):
        try:
            stats = json.loads(path.read_text(encoding="utf-8"))["norm_stats"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}: unreadable openpi norm stats: {exc!r}") from None
        out[path.parent.relative_to(root / "assets").as_posix()] = stats
    return out


def base_stats_assets(init_from: str | Path) -> dict[str, dict[str, dict[str, list[float]]]]:
    """asset id -> {"state": {...}, "actions": {...}} of the checkpoint directory (module docstring)."""
    root = Path(init_from)
    return {**_openpi_assets(root), **_lerobot_assets(root)}


def _dim_stats(raw: dict[str, list[float]], n: int, where: str) -> dict[str, Any]:
    for need in ("mean", "std", "q01", "q99"):
        if need not in raw:
            raise ConfigError(f"{where}: no {need!r}")
    if len(raw["mean"]) < n:
        raise ConfigError(f"{where}: {len(raw['mean'])} dims, the source has {n}")
    get = {f: [float(v) for v in raw.get(f, raw[{"min": "q01", "max": "q99"}.get(f, f)])][:n] for f in _FIELDS}
    return {**get, "count": 0, "q02": get["q01"], "q98": get["q99"]}


def apply_base_stats(mixture: Any, init_from: str | None, choice: dict[str, str]) -> Any:
    """The mixture with the chosen sources' manifest stats replaced by the base checkpoint's."""
    if not choice:
        return mixture
    if init_from is None:
        raise ConfigError("--base-stats needs --init-from (the checkpoint whose statistics to reuse)")
    assets = base_stats_assets(init_from)
    by_name = {s.name: s for s in mixture.sources}
    sources = list(mixture.sources)
    for name, asset in choice.items():
        if name not in by_name:
            raise ConfigError(f"--base-stats {name}={asset}: no source {name!r}; sources: {', '.join(by_name)}")
        if asset not in assets:
            raise ConfigError(f"--base-stats {name}={asset}: {init_from} has no asset {asset!r}; it has: "
                              f"{', '.join(sorted(assets)) or 'none'}")
        src = by_name[name]
        m, where = src.manifest, f"{init_from} asset {asset!r}"
        state = DimStats.model_validate(_dim_stats(assets[asset].get("state", {}), len(m.state_names),
                                                   f"{where} state"))
        actions = ActionStats.model_validate({**_dim_stats(assets[asset].get("actions", {}), len(m.action_names),
                                                           f"{where} actions"), "per_timestep": {}})
        manifest = m.model_copy(update={"stats": m.stats.model_copy(update={"state": state, "actions": actions})})
        sources[sources.index(src)] = dataclasses.replace(src, manifest=manifest)
    return dataclasses.replace(mixture, sources=tuple(sources))
