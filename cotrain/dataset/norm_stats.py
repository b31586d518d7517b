"""Norm statistics of state and actions, exact, computed from per-frame arrays.

A sample's action chunk at frame t is `actions[t : t + H]` with steps past the episode's end marked
invalid, so the values at chunk step h are exactly `actions[h:]` of every episode (where the
per-frame mask holds). Per-timestep stats therefore need only the per-frame arrays, not the H-times
larger chunks: memory is frames x dims, and quantiles are exact rather than sketched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from cotrain.dataset.manifest import ActionStats, DimStats, NormStats

QUANTILES = {"q01": 0.01, "q02": 0.02, "q98": 0.98, "q99": 0.99}
_FIELDS = ("mean", "std", "min", "max", *QUANTILES)


@dataclass(frozen=True)
class EpisodeLowdim:
    """Per-frame arrays of one episode, as written to the shards.

    Args:
        state: [T, Ds] float32 (Ds may be 0).
        actions: [T, Da] float32 (Da may be 0).
        valid: [T] bool; False where an action step is unusable (e.g. low tracking confidence).
        chunks: optional [T, H, Da] chunks when a chunk is not a slice of `actions` (e.g. human-hand
            poses expressed in the camera frame of the anchor frame); per-timestep stats then come
            from the chunks themselves.
        chunk_valid: [T, H] bool, required with `chunks`.
    """

    state: np.ndarray
    actions: np.ndarray
    valid: np.ndarray
    chunks: np.ndarray | None = None
    chunk_valid: np.ndarray | None = None

    def step_values(self, h: int) -> np.ndarray:
        """[N, Da] valid action values at chunk step h."""
        if self.chunks is not None and self.chunk_valid is not None:
            if h >= self.chunks.shape[1]:
                none: np.ndarray = self.chunks[:0, 0]
                return none
            at_h: np.ndarray = self.chunks[:, h][self.chunk_valid[:, h]]
            return at_h
        values: np.ndarray = self.actions[h:][self.valid[h:]]
        return values


def _describe(values_nd: np.ndarray) -> dict[str, list[float]]:
    """Column statistics of [N, D] float values (float64 math, rounded through float32 for JSON)."""
    v = values_nd.astype(np.float64)
    q = np.quantile(v, list(QUANTILES.values()), axis=0) if len(v) else None
    out = {
        "mean": v.mean(axis=0),
        "std": v.std(axis=0),
        "min": v.min(axis=0),
        "max": v.max(axis=0),
    }
    for i, name in enumerate(QUANTILES):
        out[name] = q[i]  # type: ignore[index]  # q is None only for empty values, where v.min above raised
    return {k: [float(np.float32(x)) for x in np.atleast_1d(arr)] for k, arr in out.items()}


def compute_dim_stats(values_nd: np.ndarray) -> DimStats | None:
    """Column statistics of [N, D] values, or None when there are none."""
    if values_nd.ndim != 2 or values_nd.shape[0] == 0 or values_nd.shape[1] == 0:
        return None
    return DimStats(count=int(values_nd.shape[0]), **_describe(values_nd))


def compute_action_stats(episodes: Sequence[EpisodeLowdim], horizon: int) -> ActionStats | None:
    """Statistics of the actions and of each chunk step, or None without actions."""
    frames = [ep.actions[ep.valid] for ep in episodes if ep.actions.size]
    if not frames:
        return None
    overall = np.concatenate(frames)
    if overall.shape[0] == 0 or overall.shape[1] == 0:
        return None
    base = _describe(overall)
    per_step: dict[str, list[list[float]]] = {k: [] for k in _FIELDS}
    per_step["count"] = []
    for h in range(horizon):
        step = [ep.step_values(h) for ep in episodes if ep.actions.size]
        values = np.concatenate(step) if step else overall[:0]
        described = _describe(values) if len(values) else base  # no episode reaches step h
        for k in _FIELDS:
            per_step[k].append(described[k])
        per_step["count"].append([float(len(values))])
    return ActionStats(count=int(overall.shape[0]), per_timestep=per_step, **base)


def compute_norm_stats(episodes: Sequence[EpisodeLowdim], horizon: int) -> NormStats:
    """State and action statistics of the episodes."""
    states = [ep.state for ep in episodes if ep.state.size]
    state = compute_dim_stats(np.concatenate(states)) if states else None
    return NormStats(state=state, actions=compute_action_stats(episodes, horizon))


def save_lowdim(fh: BinaryIO, episodes: Sequence[EpisodeLowdim]) -> None:
    """Store per-frame arrays of several episodes in one npz (no pickle), episode lengths alongside."""
    lengths = np.array([len(ep.state) if ep.state.size else len(ep.actions) for ep in episodes], dtype=np.int64)

    def cat(arrays: list[np.ndarray], width: int) -> np.ndarray:
        return np.concatenate(arrays) if arrays else np.zeros((0, width), np.float32)

    ds = episodes[0].state.shape[1] if episodes and episodes[0].state.ndim == 2 else 0
    da = episodes[0].actions.shape[1] if episodes and episodes[0].actions.ndim == 2 else 0
    arrays = {
        "lengths": lengths,
        "state": cat([ep.state for ep in episodes], ds),
        "actions": cat([ep.actions for ep in episodes], da),
        "valid": np.concatenate([ep.valid for ep in episodes]) if episodes else np.zeros(0, bool),
    }
    if episodes and all(ep.chunks is not None for ep in episodes):
        arrays["chunks"] = np.concatenate([ep.chunks for ep in episodes])
        arrays["chunk_valid"] = np.concatenate([ep.chunk_valid for ep in episodes])
    np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy's stub matches **kwds against allow_pickle: bool


def load_lowdim(path: str | Path) -> list[EpisodeLowdim]:
    """The episodes of a lowdim .npz file (see save_lowdim)."""
    with np.load(path, allow_pickle=False) as z:
        lengths, state, actions, valid = z["lengths"], z["state"], z["actions"], z["valid"]
        chunks = z["chunks"] if "chunks" in z.files else None
        chunk_valid = z["chunk_valid"] if "chunk_valid" in z.files else None
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    out = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        out.append(
            EpisodeLowdim(
                state=state[a:b] if len(state) else state,
                actions=actions[a:b] if len(actions) else actions,
                valid=valid[a:b],
                chunks=None if chunks is None else chunks[a:b],
                chunk_valid=None if chunk_valid is None else chunk_valid[a:b],
            )
        )
    return out
