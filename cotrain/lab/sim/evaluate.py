"""Closed-loop evaluation: success rate per split (seen, unseen, seen_shift, unseen_shift) and group,
how near the effector came to the task's object (`closest`, `mean_closest`), and whether the policy
goes where that object is (`tracking`, from where the gripper first closes: see `tracking_slope`).

A policy is any callable `policy(obs) -> action chunk [H, action_dim]`; the evaluator executes the
first `replan_steps` actions of each chunk open loop (fewer if the episode ends), then asks again, as
chunked VLA policies run on real robots. Policies are built per episode by a factory
`make_policy(env)` (the factory is the reset hook; the scripted expert also reads the env's world).

Episode i of N goes to split `splits[i % len(splits)]` as that split's episode `i // len(splits)`,
and every split's episodes are pure functions of (seed, split, index) (env.py), so a larger N only
adds episodes and two policies evaluated with the same seed face the same layouts and conditions.
Rates come with Wilson 95% intervals; at 12 episodes per split an interval spans about +-0.25.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cotrain import seeds
from cotrain.errors import ConfigError
from cotrain.lab.sim.embodiments import DEFAULT_TARGET, ROBOTS
from cotrain.lab.sim.env import TabletopEnv, episode_rng, sample_eval_episode
from cotrain.lab.sim.episode import BatchedPolicy, EpisodeRun, run_lockstep
from cotrain.lab.sim.expert import ExpertParams, expert_chunk
from cotrain.lab.sim.scene import ALL_SPLITS, EVAL_SPLITS, VERBS, check_verbs

Policy = Callable[[dict[str, Any]], np.ndarray]
PolicyFactory = Callable[[TabletopEnv], Policy]
BASELINES = ("expert", "random")
_RANDOM_STREAM = seeds.SIM_RANDOM_POLICY


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate.

    Args:
        episodes: total episodes, spread round-robin over `splits`.
        splits: evaluation splits, from EVAL_SPLITS, or `train` (the training demonstrations' layouts).
        embodiment: the robot the policy drives.
        replan_steps: actions executed from each chunk before the policy is asked again.
        horizon: chunk length the baselines produce.
        max_steps: steps before an episode counts as failed (default: 6 s at the robot's rate).
        image_size: camera image side in pixels (the size the policy was trained on).
        seed: evaluation seed (independent of the generation seed's streams).
        verbs: task verbs to evaluate (those the corpus was generated with).
    """

    episodes: int = 50
    splits: tuple[str, ...] = EVAL_SPLITS
    embodiment: str = DEFAULT_TARGET
    replan_steps: int = 8
    horizon: int = 16
    max_steps: int | None = None
    image_size: int = 64
    seed: int = 0
    verbs: tuple[str, ...] = VERBS

    def __post_init__(self) -> None:
        try:
            check_verbs(self.verbs)
        except ValueError as exc:
            raise ConfigError(f"--verbs: {exc}") from None
        unknown = [s for s in self.splits if s not in ALL_SPLITS]
        if unknown or not self.splits:
            raise ConfigError(f"--splits {','.join(self.splits)!r}: choose from {', '.join(ALL_SPLITS)}")
        if self.embodiment not in ROBOTS:
            raise ConfigError(f"--embodiment {self.embodiment!r}: choose from {', '.join(ROBOTS)}")
        if self.episodes < 1 or self.replan_steps < 1 or self.horizon < 1:
            raise ConfigError("--episodes, --replan-steps and --horizon must be at least 1")


def stateless(policy: Policy) -> PolicyFactory:
    """A factory for a plain `policy(obs) -> chunk` callable that keeps no per-episode state."""
    return lambda env: policy


def expert_policy(cfg: EvalConfig) -> PolicyFactory:
    """The scripted expert with default style, replanning from the env's true state (privileged)."""
    def make(env: TabletopEnv) -> Policy:
        return lambda obs: expert_chunk(env.current()[0], cfg.horizon, ExpertParams())

    return make


def random_policy(cfg: EvalConfig) -> PolicyFactory:
    """Uniform moves within the step limit and a random gripper command, seeded per episode."""
    def make(env: TabletopEnv) -> Policy:
        spec = env.current()[1]
        rng = episode_rng(cfg.seed, _RANDOM_STREAM + ALL_SPLITS.index(spec.split), spec.index)
        step, dims = env.embodiment.max_step, env.action_dim

        def act(obs: dict[str, Any]) -> np.ndarray:
            chunk = rng.uniform(-step, step, (cfg.horizon, dims))
            chunk[:, -1] = rng.integers(0, 2, cfg.horizon)
            return chunk.astype(np.float32)

        return act

    return make


def load_run_policy(run_dir: str | Path, embodiment: str, batch_size: int = 1) -> PolicyFactory | BatchedPolicy:
    """A trained run's policy through `cotrain.eval.policy.Policy.load(run_dir)`, asked by source or
    embodiment name. `batch_size` 1 asks `predict` once per chunk, episode after episode; above 1
    the episodes run in lockstep and `predict_batch` serves up to that many at once (same noise
    seed per observation; only the batched kernels' float rounding can differ)."""
    try:
        from cotrain.eval.policy import Observation  # noqa: PLC0415  (torch: import on use)
        from cotrain.eval.policy import Policy as TrainedPolicy  # noqa: PLC0415
    except ImportError as exc:
        raise ConfigError(f"cannot load a trained policy ({exc}); evaluate a baseline with --policy "
                          f"{' or --policy '.join(BASELINES)}") from None
    policy = TrainedPolicy.load(run_dir)
    if batch_size > 1:
        def predict(observations: Sequence[dict[str, Any]]) -> list[np.ndarray]:
            asked = [Observation(o["images"], o["state"], o["instruction"], embodiment) for o in observations]
            return [np.asarray(chunk, np.float32) for chunk in policy.predict_batch(asked)]

        return BatchedPolicy(predict, batch_size)

    def make(env: TabletopEnv) -> Policy:
        def act(obs: dict[str, Any]) -> np.ndarray:
            chunk = policy.predict(obs["images"], obs["state"], obs["instruction"], embodiment)
            return np.asarray(chunk.detach().cpu() if hasattr(chunk, "detach") else chunk, np.float32)

        return act

    return make


def served_policy(url: str, embodiment: str) -> PolicyFactory:
    """A policy served by `cotrain serve` at `url` (ws://HOST:PORT), asked over openpi's protocol.

    Observations go out under the keys the server's metadata names; no noise seed is sent, so the
    server uses its `--seed` for every chunk, as `load_run_policy` uses predict's default seed: the
    same run served with `--seed 0` gives the same episodes as the in-process path with batch_size 1.
    """
    from cotrain.serve.client import PolicyClient  # noqa: PLC0415  (websockets: import on use)

    client = PolicyClient(url)
    meta = client.metadata
    keys = meta.get("observation_keys")
    if not isinstance(keys, dict):
        raise ConfigError(f"--server {url}: its metadata names no observation_keys (is it `cotrain serve`?)")
    if embodiment not in (meta.get("source"), meta.get("embodiment")):
        raise ConfigError(f"--server {url} drives {meta.get('source')!r} (embodiment {meta.get('embodiment')!r}), "
                          f"not --embodiment {embodiment!r}")

    def act(obs: dict[str, Any]) -> np.ndarray:
        wire = {key: obs["images"][cam] for cam, key in keys["cameras"].items() if cam in obs["images"]}
        wire[keys["prompt"]] = obs["instruction"]
        if keys.get("state"):
            wire[keys["state"]] = np.asarray(obs["state"])
        return np.asarray(client.infer(wire)["actions"], np.float32)

    return stateless(act)


def run_episode(env: TabletopEnv, make_policy: PolicyFactory, spec_options: dict[str, Any],
                replan_steps: int) -> dict[str, Any]:
    """One closed-loop episode; returns its record (split, group, condition, success, steps, closest, ...).

    `closest` is the nearest the effector came to the task's object on the table plane (0 once it
    holds it; a push works from 0.11): a dense measure of reaching the named object, informative
    where success is rare. `object_xy` is where that object stood at the start (what the first image
    showed) and `first_close_xy` where the effector was when the gripper first closed (None if it
    never did): every verb's expert closes at or just behind the object, so these two say whether
    the policy goes where the named object is, even when it fails.
    """
    run = EpisodeRun(env, spec_options["episode"])
    policy = make_policy(env)
    while not run.done:
        run.execute(policy(run.obs), replan_steps)
    return run.record()


def tracking_slope(records: Sequence[dict[str, Any]]) -> float | None:
    """Least-squares slope of where the gripper first closed on where the task's object stood.

    Both table axes are pooled after centring each: 1 means the policy closes wherever the named
    object is (the expert: about 1), 0 that it closes in the same place whatever the layout (a
    policy that replays the demos' average path). None with fewer than 3 episodes that closed.
    Only pairs recorded by `run_episode` count (older evaluation files lack them).
    """
    pairs = [(r["object_xy"], r["first_close_xy"]) for r in records if r.get("first_close_xy") is not None]
    if len(pairs) < 3:
        return None
    objects, closes = (np.asarray(side, np.float64) for side in zip(*pairs))
    objects, closes = objects - objects.mean(0), closes - closes.mean(0)
    spread = float((objects * objects).sum())
    return round(float((objects * closes).sum()) / spread, 4) if spread > 0 else None


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a success rate."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def summarise(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Success rate with its interval, and step counts of the successes."""
    n, k = len(records), sum(r["success"] for r in records)
    lo, hi = wilson_interval(k, n)
    steps = [r["steps"] for r in records if r["success"]]
    return {"episodes": n, "successes": k, "success_rate": k / n if n else 0.0, "ci95": [round(lo, 4), round(hi, 4)],
            "mean_steps_success": float(np.mean(steps)) if steps else None,
            "mean_closest": round(float(np.mean([r["closest"] for r in records])), 4) if records else None,
            "closed": sum(r.get("first_close_xy") is not None for r in records), "tracking": tracking_slope(records)}


def _grouped(records: Sequence[dict[str, Any]], key: str) -> dict[str, Any]:
    names = list(dict.fromkeys(r[key] for r in records))
    return {name: summarise([r for r in records if r[key] == name]) for name in names}


def evaluate_policy(make_policy: PolicyFactory | BatchedPolicy, cfg: EvalConfig = EvalConfig(), *,
                    name: str = "policy", progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Run cfg.episodes closed-loop episodes and return the JSON-ready result.

    A `BatchedPolicy` runs the episodes in lockstep (episode.py), one policy call for all running
    episodes; a factory runs them one after another.
    """
    start = time.perf_counter()
    env = TabletopEnv(cfg.embodiment, cfg.image_size, cfg.max_steps)
    specs = [sample_eval_episode(cfg.splits[i % len(cfg.splits)], i // len(cfg.splits), cfg.seed, env.embodiment,
                                 cfg.max_steps, cfg.verbs) for i in range(cfg.episodes)]
    if isinstance(make_policy, BatchedPolicy):
        records = run_lockstep(lambda: TabletopEnv(cfg.embodiment, cfg.image_size, cfg.max_steps), specs,
                               make_policy, cfg.replan_steps, progress)
    else:
        records = []
        for i, spec in enumerate(specs):
            records.append(run_episode(env, make_policy, {"episode": spec}, cfg.replan_steps))
            if progress:
                progress(i + 1, cfg.episodes)
    splits = {s: summarise([r for r in records if r["split"] == s]) for s in cfg.splits}
    groups = {s: _grouped([r for r in records if r["split"] == s], "group") for s in cfg.splits if "unseen" in s}
    conditions = {s: _grouped([r for r in records if r["split"] == s], "condition")
                  for s in cfg.splits if s.endswith("shift")}
    config = {**asdict(cfg), "splits": list(cfg.splits), "verbs": list(cfg.verbs)}
    return {"policy": name, "config": config, "overall": summarise(records), "splits": splits, "groups": groups,
            "conditions": conditions, "episodes": records, "seconds": round(time.perf_counter() - start, 2)}
