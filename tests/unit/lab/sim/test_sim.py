"""The simulated tabletop benchmark: physics rules, determinism, the split design, expert and random
baselines, and the generated corpus going through the real converters (exact values round-tripped)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cotrain.errors import ConfigError
from cotrain.lab.sim.embodiments import EMBODIMENTS, HOLD_CLOSURE, get_embodiment
from cotrain.lab.sim.env import TabletopEnv, episode_rng, sample_demo_episode, sample_eval_episode, solvable
from cotrain.lab.sim.episode import run_lockstep
from cotrain.lab.sim.evaluate import (
    BatchedPolicy,
    EvalConfig,
    evaluate_policy,
    expert_policy,
    load_run_policy,
    random_policy,
    run_episode,
    stateless,
    tracking_slope,
)
from cotrain.lab.sim.expert import ExpertParams, expert_action, expert_chunk
from cotrain.lab.sim.generate import CorpusConfig, convert_corpus, generate_corpus, record_role
from cotrain.lab.sim.render import Renderer, sample_condition
from cotrain.lab.sim.scene import (
    BASE_COLOURS,
    BASE_SHAPES,
    EXCLUSIVE,
    HELD_OUT_COMBOS,
    ROLES,
    UNSEEN_GROUPS,
    Item,
    Scene,
    TaskSpec,
    concepts_of_scene,
    demo_tasks,
    palette,
    sample_scene,
    sample_task,
    unseen_tasks,
)
from cotrain.lab.sim.world import CONTACT_RADIUS, World
from tests.helpers import episodes_of, run_cli


def _scene(task: TaskSpec, obj: tuple[float, float] = (0.5, 0.5), goal: tuple[float, float] = (0.8, 0.5)) -> Scene:
    objects = (Item(task.colour, task.shape, obj), Item("blue", "ball", (0.2, 0.2)), Item("green", "ring", (0.2, 0.8)))
    goals = (Item(task.goal_colour or "red", task.goal_kind or "plate", goal), Item("yellow", "mat", (0.8, 0.15)))
    return Scene(task, objects, goals, start=(0.5, 0.9))


# --- physics -------------------------------------------------------------------------------------------

def test_grasp_needs_closing_low_and_near() -> None:
    world = World.start(_scene(TaskSpec("pick", "red", "cube")), get_embodiment("sim_arm"))
    world.ee[:] = (0.5, 0.5, 0.2)
    world.step(np.array([0, 0, 0, 1.0]))  # closing high above the object grasps nothing
    assert world.held == -1 and world.closure == 1.0
    world.step(np.array([0, 0, -0.05, 0.0]))
    world.step(np.array([0, 0, -0.05, 0.0]))
    world.step(np.array([0, 0, -0.05, 0.0]))
    world.step(np.array([0, 0, -0.05, 0.0]))
    assert world.ee[2] == pytest.approx(0.0)
    world.step(np.array([0.0, 0.0, 0.0, 1.0]))
    assert world.held == 0 and world.closure == HOLD_CLOSURE and not world.success()  # not lifted yet
    for _ in range(3):
        world.step(np.array([0.0, 0.0, 0.05, 1.0]))
    assert world.success() and np.allclose(world.objects[0], world.ee)


def test_open_gripper_passes_over_closed_gripper_pushes() -> None:
    world = World.start(_scene(TaskSpec("push", "red", "cube", "red", "plate")), get_embodiment("sim_gripper"))
    world.ee[:] = (0.35, 0.5, 0.0)
    for _ in range(6):
        world.step(np.array([0.05, 0.0, 0.0]))  # open: slides across the object's centre line
    assert np.allclose(world.objects[0, :2], (0.5, 0.5))
    world.ee[:] = (0.35, 0.5, 0.0)
    world.step(np.array([0.0, 0.0, 1.0]))  # close 0.15 away: nothing within grasp radius
    assert world.held == -1
    for _ in range(2):
        world.step(np.array([0.05, 0.0, 1.0]))
    assert world.ee[0] == pytest.approx(0.45)
    assert world.objects[0, 0] == pytest.approx(0.45 + CONTACT_RADIUS) and world.objects[0, 1] == pytest.approx(0.5)


def test_push_and_place_success_tell_grasped_from_pushed() -> None:
    push = World.start(_scene(TaskSpec("push", "red", "cube", "red", "plate")), get_embodiment("sim_gripper"))
    push.objects[0, :2] = (0.78, 0.5)  # on the goal, never grasped
    assert push.success()
    place = World.start(_scene(TaskSpec("place", "red", "cube", "red", "plate")), get_embodiment("sim_gripper"))
    place.objects[0, :2] = (0.78, 0.5)
    assert not place.success()  # pushed there: not a place
    place.grasped[0] = True
    assert place.success()


def test_actions_are_checked_and_clipped() -> None:
    world = World.start(_scene(TaskSpec("pick", "red", "cube")), get_embodiment("sim_arm"))
    with pytest.raises(ValueError, match="sim_arm: action has 3 values, expected 4"):
        world.step(np.zeros(3))
    with pytest.raises(ValueError, match="NaN or inf"):
        world.step(np.array([np.nan, 0, 0, 0]))
    start = world.ee.copy()
    world.step(np.array([1.0, 0.0, 0.0, 0.0]))
    assert world.ee[0] - start[0] == pytest.approx(0.05)


# --- split design ----------------------------------------------------------------------------------------

def test_each_exclusive_concept_is_shown_by_exactly_one_role() -> None:
    for concept, role in EXCLUSIVE.items():
        showing = [r for r in ROLES if concept in palette(r).colours + palette(r).shapes]
        assert showing == [role]
    assert palette("target").colours == BASE_COLOURS and palette("target").shapes == BASE_SHAPES


def test_demo_tasks_leave_out_exclusive_concepts_and_held_out_combos() -> None:
    for role in ("target", "cross_embodiment", "human"):
        tasks = demo_tasks(role)
        allowed = set(palette(role).colours + palette(role).shapes)
        assert all({t.colour, t.shape, t.goal_colour or "red"} <= allowed for t in tasks)
        assert not {(t.verb, t.colour, t.shape) for t in tasks} & set(HELD_OUT_COMBOS)
    target = set(demo_tasks("target"))
    for group, concept in UNSEEN_GROUPS.items():
        tasks = unseen_tasks(group)
        assert tasks and not set(tasks) & target
        if concept is not None:
            assert all(concept in t.concepts for t in tasks)
            role = EXCLUSIVE[concept]
            if role != "vision_language":  # demonstrations of its role do perform tasks with it
                assert any(concept in t.concepts for t in demo_tasks(role))
    assert {(t.verb, t.colour, t.shape) for t in unseen_tasks("combo")} == set(HELD_OUT_COMBOS)


def test_sampled_scenes_stay_inside_their_role_palette() -> None:
    for role in ("target", "cross_embodiment", "human"):
        pal = palette(role)
        for i in range(60):
            rng = episode_rng(0, 9, i)
            scene = sample_scene(sample_task(demo_tasks(role), rng), rng, pal)
            shown = concepts_of_scene(scene) - {"pick", "push", "place", "plate", "mat"}
            assert shown <= set(pal.colours + pal.shapes), (role, shown)


def test_eval_splits_draw_the_designed_tasks() -> None:
    arm = get_embodiment("sim_arm")
    seen = [sample_eval_episode("seen", i, 0, arm) for i in range(8)]
    assert all(s.scene.task in set(demo_tasks("target")) and s.condition.name == "normal" for s in seen)
    unseen = [sample_eval_episode("unseen_shift", i, 0, arm) for i in range(12)]
    assert [s.group for s in unseen[:4]] == list(UNSEEN_GROUPS)
    assert {s.condition.name for s in unseen} == {"lighting", "background", "colour"}
    for spec in unseen:  # distractors stay base: only the task's object is new
        assert all(o.colour in BASE_COLOURS and o.shape in BASE_SHAPES for o in spec.scene.objects[1:])


# --- determinism, expert and random -------------------------------------------------------------------

def _rollout(env: TabletopEnv, seed: int, split: str, index: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    obs, _ = env.reset(seed=seed, options={"split": split, "index": index})
    frames, actions, done = [obs["images"]["top"]], [], False
    while not done:
        action = expert_action(env.world)  # type: ignore[arg-type]  # the env has a world after reset()
        obs, _, terminated, truncated, _ = env.step(action)
        frames.append(obs["images"]["top"])
        actions.append(action)
        done = terminated or truncated
    return frames, actions


def test_same_seed_same_frames_and_actions() -> None:
    a, b = TabletopEnv("sim_arm"), TabletopEnv("sim_arm")
    frames_a, actions_a = _rollout(a, 7, "seen_shift", 2)
    frames_b, actions_b = _rollout(b, 7, "seen_shift", 2)
    assert len(frames_a) == len(frames_b) > 5
    assert all(np.array_equal(x, y) for x, y in zip(frames_a, frames_b))
    assert all(np.array_equal(x, y) for x, y in zip(actions_a, actions_b))
    other, _ = _rollout(a, 8, "seen_shift", 2)
    assert not np.array_equal(other[0], frames_a[0])
    obs, _ = a.reset(seed=7, options={"split": "seen_shift", "index": 2})
    assert obs["state"].dtype == np.float32 and obs["images"]["top"].shape == (64, 64, 3)


@pytest.mark.parametrize("embodiment", ["sim_arm", "sim_gripper", "human_hand"])
def test_expert_solves_raw_scenes_of_every_role(embodiment: str) -> None:
    """Without the samplers' redraws: the expert itself succeeds on >= 98% of raw layouts."""
    emb = get_embodiment(embodiment)
    solved = total = 0
    for role in ("target", "cross_embodiment", "human"):
        for i in range(40):
            rng = episode_rng(3, 7, i)
            scene = sample_scene(sample_task(demo_tasks(role), rng), rng, palette(role))
            solved += bool(solvable(scene, emb, ExpertParams.sample(rng)))
            total += 1
    assert solved / total >= 0.98


@pytest.mark.parametrize("embodiment", ["sim_arm", "sim_gripper"])
def test_expert_succeeds_and_random_fails_on_every_split(embodiment: str) -> None:
    cfg = EvalConfig(episodes=24, embodiment=embodiment)
    expert = evaluate_policy(expert_policy(cfg), cfg, name="expert")
    rand = evaluate_policy(random_policy(cfg), cfg, name="random")
    assert {s: v["success_rate"] for s, v in expert["splits"].items()} == dict.fromkeys(cfg.splits, 1.0)
    assert rand["overall"]["success_rate"] <= 0.1
    assert [e["instruction"] for e in expert["episodes"]] == [e["instruction"] for e in rand["episodes"]]
    # The expert reaches every task's object: within grasping distance for pick and place, at the contact
    # distance it pushes from for push; a random policy, on average, stays far from it.
    from cotrain.lab.sim.world import CONTACT_RADIUS, GRASP_RADIUS

    for e in expert["episodes"]:
        assert e["closest"] <= (CONTACT_RADIUS + 0.005 if e["instruction"].startswith("push") else GRASP_RADIUS), e
    assert rand["overall"]["mean_closest"] > 0.15 > expert["overall"]["mean_closest"]


def test_train_split_replays_the_target_demonstrations() -> None:
    """`train` episode i is demonstration i of a corpus with the same seed and verbs: same scene, same
    first frame; the privileged expert solves them all; the split is reported on its own."""
    cfg = CorpusConfig(seed=3, verbs=("pick", "push"))
    renderer = Renderer(cfg.image_size)
    recs = record_role("target", "sim_arm", 3, cfg, renderer)
    env = TabletopEnv("sim_arm")
    for i, rec in enumerate(recs):
        spec = sample_eval_episode("train", i, 3, env.embodiment, verbs=cfg.verbs)
        assert (spec.scene, spec.condition, spec.split, spec.group) == (rec.spec.scene, rec.spec.condition,
                                                                       "train", "train")
        obs, info = env.reset(options={"episode": spec})
        np.testing.assert_array_equal(obs["images"]["top"], rec.images["top"][0])
        assert obs["instruction"] == rec.instruction and info["split"] == "train"
    ev = EvalConfig(episodes=6, splits=("train", "seen"), seed=3, verbs=cfg.verbs)
    result = evaluate_policy(expert_policy(ev), ev, name="expert")
    assert [e["instruction"] for e in result["episodes"] if e["split"] == "train"] == [r.instruction for r in recs]
    assert result["splits"]["train"]["success_rate"] == 1.0 and set(result["groups"]) == set()
    with pytest.raises(ConfigError, match="choose from seen, unseen, seen_shift, unseen_shift, train"):
        EvalConfig(splits=("training",))


def test_eval_result_schema_and_determinism() -> None:
    cfg = EvalConfig(episodes=10, replan_steps=4)
    result = evaluate_policy(random_policy(cfg), cfg, name="random")
    again = evaluate_policy(random_policy(cfg), cfg, name="random")
    assert result["episodes"] == again["episodes"]
    assert set(result) == {"policy", "config", "overall", "splits", "groups", "conditions", "episodes", "seconds"}
    assert [result["splits"][s]["episodes"] for s in cfg.splits] == [3, 3, 2, 2]
    assert set(result["groups"]) == {"unseen", "unseen_shift"}
    assert set(result["groups"]["unseen"]) == {"vision_language", "cross_embodiment", "human"}
    assert set(result["conditions"]["seen_shift"]) == {"lighting", "background"}
    assert set(result["splits"]["seen"]) == {"episodes", "successes", "success_rate", "ci95", "mean_steps_success",
                                             "mean_closest", "closed", "tracking"}
    json.dumps(result)


def _go_and_close(target: Any) -> Any:
    """A factory for a policy that moves to `target(world)` (xy), lowers and closes there."""
    def make(env: TabletopEnv) -> Any:
        def act(obs: dict[str, Any]) -> np.ndarray:
            world = env.current()[0]
            goal = np.append(target(world), 0.02)
            delta = np.clip(goal - world.ee, -0.03, 0.03)
            close = float(np.linalg.norm(goal - world.ee) < 0.01)
            return np.append(delta, close)[None].astype(np.float32)  # one step: no overshoot
        return act
    return make


def test_tracking_tells_going_to_the_named_object_from_not() -> None:
    """The first-close point follows the task's object for the expert and for a policy that goes to it;
    it does not for one that always closes at the table's centre or goes for another object."""
    cfg = EvalConfig(episodes=24, splits=("seen",), verbs=("pick",))
    results = {name: evaluate_policy(make, cfg, name=name) for name, make in (
        ("expert", expert_policy(cfg)), ("named", _go_and_close(lambda w: w.objects[0, :2])),
        ("centre", _go_and_close(lambda w: np.array([0.5, 0.5]))),
        ("other", _go_and_close(lambda w: w.objects[1, :2])))}
    seen = {name: r["splits"]["seen"] for name, r in results.items()}
    assert {name: s["closed"] for name, s in seen.items()} == dict.fromkeys(results, 24)
    assert seen["expert"]["tracking"] == pytest.approx(1.0, abs=0.02)
    assert seen["named"]["tracking"] == pytest.approx(1.0, abs=0.02) and seen["named"]["mean_closest"] == 0.0  # held
    assert seen["centre"]["tracking"] == pytest.approx(0.0, abs=1e-6)
    assert abs(seen["other"]["tracking"]) < 0.5 and seen["other"]["success_rate"] == 0.0
    for e in results["named"]["episodes"]:
        assert np.linalg.norm(np.subtract(e["first_close_xy"], e["object_xy"])) < 0.01, e
    # Too few closes (a policy that never closes; files written before the metric) give no slope.
    assert tracking_slope(results["named"]["episodes"][:2]) is None
    assert tracking_slope([{k: v for k, v in e.items() if k != "first_close_xy"}
                           for e in results["named"]["episodes"]]) is None
    still = evaluate_policy(stateless(lambda obs: np.zeros((4, 4), np.float32)), replace(cfg, episodes=3))
    assert still["splits"]["seen"]["closed"] == 0 and still["splits"]["seen"]["tracking"] is None


def _centre_seeker(obs: dict) -> np.ndarray:
    """Obs-only and deterministic: head for a point set by the image's mean colour, descend, close."""
    x, y, z, _ = (float(v) for v in obs["state"])
    shade = float(np.asarray(obs["images"]["top"], np.float32).mean()) / 255.0
    goal = np.array([0.3 + 0.4 * shade, 0.5])
    delta = np.clip(goal - [x, y], -0.05, 0.05)
    low = np.hypot(*(goal - [x, y])) < 0.05
    return np.tile(np.r_[delta, -0.05 if low else 0.0, float(low and z < 0.04)], (4, 1)).astype(np.float32)


def test_lockstep_evaluation_equals_one_episode_at_a_time() -> None:
    """A BatchedPolicy runs the episodes in lockstep on a pool of envs (refilled as episodes end) and
    gives the sequential evaluation's records, in episode order."""
    cfg = EvalConfig(episodes=14, verbs=("pick",), replan_steps=3)
    calls: list[int] = []

    def predict(observations: list) -> list:
        calls.append(len(observations))
        return [_centre_seeker(o) for o in observations]

    done: list[int] = []
    batched = evaluate_policy(BatchedPolicy(predict, batch_size=5), cfg, progress=lambda k, n: done.append(k))
    sequential = evaluate_policy(stateless(_centre_seeker), cfg)
    assert batched["episodes"] == sequential["episodes"] and batched["splits"] == sequential["splits"]
    assert max(calls) == 5 and done == list(range(1, 15))
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        BatchedPolicy(predict, batch_size=0)
    with pytest.raises(ValueError, match="returned 1 chunks for 5 observations"):
        evaluate_policy(BatchedPolicy(lambda obs: [_centre_seeker(obs[0])], batch_size=5), cfg)


class _Tagged(TabletopEnv):
    """Its observations carry the env, so a test policy can act as the expert through them."""

    def _obs(self) -> dict[str, Any]:
        return {**super()._obs(), "env": self}


def _expert_or_idle(obs: dict[str, Any]) -> np.ndarray:
    world, spec = obs["env"].current()
    if spec.index % 3 == 2:  # every third episode fails: runs to the step limit
        return np.zeros((4, 4), np.float32)
    return expert_chunk(world, 4, ExpertParams())


def test_lockstep_pool_refills_as_episodes_end_at_different_steps() -> None:
    specs = [sample_eval_episode(("seen", "unseen")[i % 2], i // 2, 0, get_embodiment("sim_arm"), None, ("pick",))
             for i in range(11)]
    calls: list[int] = []

    def predict(observations: list) -> list:
        calls.append(len(observations))
        return [_expert_or_idle(o) for o in observations]

    batched = run_lockstep(lambda: _Tagged("sim_arm"), specs, BatchedPolicy(predict, batch_size=4), 2)
    sequential = [run_episode(_Tagged("sim_arm"), stateless(_expert_or_idle), {"episode": s}, 2) for s in specs]
    assert batched == sequential
    assert [r["success"] for r in batched] == [s.index % 3 != 2 for s in specs]
    assert len({r["steps"] for r in batched}) > 2 and max(calls) == 4
    assert sum(calls) == sum(-(-r["steps"] // 2) for r in batched)  # one observation per chunk of each episode


def test_bad_chunk_shape_is_an_error() -> None:
    cfg = EvalConfig(episodes=1)
    with pytest.raises(ValueError, match=r"action chunk of shape \(4,\); expected \[H, 4\]"):
        evaluate_policy(stateless(lambda obs: np.zeros(4)), cfg)
    still = evaluate_policy(stateless(lambda obs: np.zeros((5, 4), np.float32)), cfg)
    assert still["episodes"][0]["steps"] == 60 and not still["episodes"][0]["success"]


def test_run_policy_adapter_passes_observations(monkeypatch: pytest.MonkeyPatch) -> None:
    import cotrain.eval.policy as policy_module

    calls: list[tuple[Any, ...]] = []

    class FakePolicy:
        @classmethod
        def load(cls, run_dir: Any) -> FakePolicy:
            calls.append(("load", str(run_dir)))
            return cls()

        def predict(self, images: dict, state: np.ndarray, instruction: str, embodiment: str) -> np.ndarray:
            calls.append((sorted(images), state.shape, instruction, embodiment))
            return np.zeros((16, 4), np.float32)

        def predict_batch(self, observations: list) -> list[np.ndarray]:
            calls.append(tuple((sorted(o.images), o.instruction, o.embodiment, o.seed) for o in observations))
            return [np.zeros((16, 4), np.float32) for _ in observations]

    monkeypatch.setattr(policy_module, "Policy", FakePolicy)
    cfg = EvalConfig(episodes=1, splits=("seen",), replan_steps=16)
    result = evaluate_policy(load_run_policy("runs/x", "sim_arm"), cfg)
    assert calls[0] == ("load", "runs/x")
    instruction = result["episodes"][0]["instruction"]
    assert calls[1] == (["top"], (4,), instruction, "sim_arm") and len(calls) == 1 + 4  # 60 steps / 16 per chunk
    assert result["overall"]["success_rate"] == 0.0
    calls.clear()
    batched = evaluate_policy(load_run_policy("runs/x", "sim_arm", batch_size=8), replace(cfg, episodes=3))
    texts = tuple((["top"], e["instruction"], "sim_arm", 0) for e in batched["episodes"])
    assert calls[0] == ("load", "runs/x") and calls[1:] == [texts] * 4  # 3 episodes per call, 4 chunks each


def test_shift_conditions_change_the_image_not_the_scene() -> None:
    renderer, rng = Renderer(64), np.random.default_rng(0)
    spec, _ = sample_demo_episode("target", 0, 0, get_embodiment("sim_arm"))
    world = World.start(spec.scene, get_embodiment("sim_arm"))
    normal = renderer.render(world, sample_condition("normal", rng)).astype(float)
    for kind in ("lighting", "background", "colour"):
        shifted = renderer.render(world, sample_condition(kind, rng)).astype(float)
        assert np.abs(shifted - normal).mean() > 3.0, kind
    frames = 200
    import time

    start = time.perf_counter()
    for _ in range(frames):
        renderer.render(world, spec.condition)
    assert (time.perf_counter() - start) / frames < 0.003  # ~0.3 ms expected; generous for shared CPUs


# --- generated corpus through the real converters ------------------------------------------------------

@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, CorpusConfig]:
    root = tmp_path_factory.mktemp("sim")
    cfg = CorpusConfig(episodes=3, other_episodes=2, human_episodes=2, vl_images=4, questions_per_image=2)
    generate_corpus(root / "raw", cfg)
    convert_corpus(root / "raw", root / "converted")
    return root / "raw", root / "converted", cfg


def test_every_generated_source_converts_and_validates(corpus: tuple[Path, Path, CorpusConfig]) -> None:
    from cotrain.dataset.manifest import load_manifest
    from cotrain.dataset.validate import validate

    raw, converted, _ = corpus
    sources = json.loads((raw / "corpus.json").read_text())["sources"]
    assert [s["converter"] for s in sources] == ["lerobot", "lerobot", "egodex", "coco", "hf-parquet", "annotations",
                                                 "annotations"]
    info = json.loads((raw / "robot/sim_arm/meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["features"]["action"]["names"] == ["dx", "dy", "dz", "gripper"]
    for source in sources:
        assert validate(converted / source["name"]).ok, source["name"]
        manifest = load_manifest(converted / source["name"])
        embodiment = source["options"].get("embodiment", source.get("annotates"))
        assert (manifest.modality, manifest.embodiment) == (
            source["modality"], "human_hand" if source["role"] == "human" else embodiment)


def test_robot_demos_round_trip_exactly(corpus: tuple[Path, Path, CorpusConfig]) -> None:
    from cotrain.dataset.sequential import Dataset
    from cotrain.media.image import decode_image

    _, converted, cfg = corpus
    for role, embodiment, count in (("target", "sim_arm", 3), ("cross_embodiment", "sim_gripper", 2)):
        recs = record_role(role, embodiment, count, cfg, Renderer(cfg.image_size))
        episodes = episodes_of(Dataset.open(converted / embodiment))
        assert sorted(episodes) == [str(i) for i in range(count)]
        for i, rec in enumerate(recs):
            samples = episodes[str(i)]
            assert len(samples) == rec.length
            np.testing.assert_array_equal(np.stack([s["state.npy"] for s in samples]), rec.state)
            np.testing.assert_array_equal(np.stack([s["actions.npy"][0] for s in samples]), rec.action)
            assert samples[0]["instruction.txt"] == rec.instruction
            assert samples[0]["meta.json"]["embodiment"] == embodiment
            decoded = decode_image(samples[3]["top.jpg"]).astype(float)
            assert np.abs(decoded - rec.images["top"][3]).mean() < 6.0  # h264 then JPEG


def test_human_demos_become_hand_poses_in_the_camera_frame(corpus: tuple[Path, Path, CorpusConfig]) -> None:
    from cotrain.dataset.sequential import Dataset
    from cotrain.lab.sim.embodiments import hand_keypoints

    _, converted, cfg = corpus
    recs = record_role("human", "human_hand", 2, cfg, Renderer(cfg.image_size))
    episodes = episodes_of(Dataset.open(converted / "human_hand"))
    samples = episodes[f"train/{recs[0].spec.scene.task.verb}/0"]
    assert samples[0]["instruction.txt"] == recs[0].instruction
    # recorded at 30 Hz, converted at 10 Hz: sample k holds source frame 3k
    assert [s["meta.json"]["source_frame_index"] for s in samples] == list(range(0, recs[0].length, 3))
    for sample in (samples[0], samples[-1]):
        t = sample["meta.json"]["source_frame_index"]
        keys = hand_keypoints(recs[0].effector[t], recs[0].closure[t])
        wrist = keys["wrist"]
        right = sample["state.npy"][10:]
        # camera 1 m above the table centre looking down: x right, y = -table y, z = height - 1
        np.testing.assert_allclose(right[:3], [wrist[0] - 0.5, 0.5 - wrist[1], wrist[2] - 1.0], atol=1e-5)
        np.testing.assert_allclose(right[9], np.linalg.norm(keys["thumb"] - keys["index"]), atol=1e-5)
    assert "top.jpg" in samples[0]


def test_vision_language_text_round_trips_and_carries_purple(corpus: tuple[Path, Path, CorpusConfig]) -> None:
    from cotrain.dataset.sequential import Dataset

    raw, converted, cfg = corpus
    doc = json.loads((raw / "vl/captions/annotations/captions_train2017.json").read_text())
    captions = [s["target.txt"] for s in Dataset.open(converted / "sim_captions").iter_decoded()]
    assert captions == [a["caption"] for a in sorted(doc["annotations"], key=lambda a: (a["image_id"], a["id"]))]
    assert len(captions) == 3 * cfg.vl_images
    qa = [s["conversation.json"] for s in Dataset.open(converted / "sim_qa").iter_decoded()]
    assert len(qa) == cfg.questions_per_image * cfg.vl_images
    assert all(turns[0]["role"] == "user" and "<image>" not in turns[0]["content"] for turns in qa)
    vl_text = " ".join(captions + [t["content"] for turns in qa for t in turns])
    assert "purple" in vl_text and "star" not in vl_text and "triangle" not in vl_text
    robot_text = " ".join(s["instruction.txt"] for name in ("sim_arm", "sim_gripper", "human_hand")
                          for s in Dataset.open(converted / name).iter_decoded())
    assert "purple" not in robot_text


def test_cli_generate_refuses_to_overwrite_and_eval_baselines(tmp_path: Path) -> None:
    out = tmp_path / "raw"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    proc = run_cli("sim", "generate", str(out), "--episodes", "1")
    assert proc.returncode == 1 and "exists and is not empty; choose another OUT or pass --overwrite" in proc.stderr
    proc = run_cli("sim", "eval", "--episodes", "4", "--json")
    assert proc.returncode == 1 and "give either RUN_DIR" in proc.stderr
    proc = run_cli("sim", "eval", str(tmp_path), "--batch", "0")
    assert proc.returncode == 2 and "--batch" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("sim", "eval", "--policy", "expert", "--episodes", "4", "--splits", "seen,unseen", "--json",
                   check=True)
    result = json.loads(proc.stdout)
    assert result["policy"] == "expert" and result["splits"]["seen"] == {
        "episodes": 2, "successes": 2, "success_rate": 1.0, "ci95": result["splits"]["seen"]["ci95"],
        "mean_steps_success": result["splits"]["seen"]["mean_steps_success"],
        "mean_closest": result["splits"]["seen"]["mean_closest"], "closed": 2, "tracking": None}
    assert set(EMBODIMENTS) >= {"sim_arm", "sim_gripper"}


def test_pick_only_variant_restricts_demos_and_evaluation() -> None:
    cfg = CorpusConfig(verbs=("pick",))
    recs = record_role("target", "sim_arm", 4, cfg, Renderer(cfg.image_size))
    assert all(r.instruction.startswith("pick up the ") for r in recs)
    ev = EvalConfig(episodes=8, verbs=("pick",))
    result = evaluate_policy(expert_policy(ev), ev, name="expert")
    assert all(e["instruction"].startswith("pick up the ") for e in result["episodes"])
    assert result["overall"]["success_rate"] == 1.0
    with pytest.raises(ConfigError, match="--verbs: verbs must be a non-empty subset of pick, push, place, got lift"):
        EvalConfig(verbs=("lift",))


def test_generation_is_byte_identical_for_the_same_arguments(tmp_path: Path) -> None:
    from tests.helpers import tree_digest

    cfg = CorpusConfig(episodes=2, other_episodes=1, human_episodes=1, vl_images=2)
    generate_corpus(tmp_path / "a", cfg)
    generate_corpus(tmp_path / "b", cfg)
    first = tree_digest(tmp_path / "a")
    assert (
        first == tree_digest(tmp_path / "b") and len(first) == 21
    )  # corpus.json, 2 x (6 LeRobot files + subtasks), hdf5 + mp4, COCO json + 2 jpg, parquet
    generate_corpus(tmp_path / "c", CorpusConfig(episodes=2, other_episodes=1, human_episodes=1, vl_images=2, seed=1))
    changed = {k for k, v in tree_digest(tmp_path / "c").items() if first.get(k) != v}
    assert "robot/sim_arm/data/chunk-000/file-000.parquet" in changed


def test_subtask_annotations_cover_every_frame_with_the_expert_phase(corpus: tuple[Path, Path, CorpusConfig]) -> None:
    from cotrain.dataset.manifest import load_manifest
    from cotrain.dataset.sequential import Dataset

    _, converted, cfg = corpus
    recs = record_role("target", "sim_arm", 3, cfg, Renderer(cfg.image_size))
    report = load_manifest(converted / "sim_arm_subtasks").extra["annotation"]
    assert (report["frames_uncovered"], report["problems_total"]) == (0, 0)
    texts: dict[str, list[str]] = {}
    for sample in Dataset.open(converted / "sim_arm_subtasks").iter_decoded():
        texts.setdefault(sample["meta.json"]["episode"], []).append(sample["target.txt"])
    assert [texts[str(i)] for i in range(3)] == [list(r.phases) for r in recs]
    first = recs[0].phases
    obj = recs[0].spec.scene.objects[0]
    assert first[0] in (f"move to the {obj.colour} {obj.shape}", f"move behind the {obj.colour} {obj.shape}")


def test_one_corpus_config_for_sim_generate_and_the_study_data() -> None:
    import typer

    from cotrain.cli.app import app
    from cotrain.lab.ablate.config import StudyDataConfig
    from cotrain.lab.corpus_config import _DEFAULT_TARGET, _DEFAULT_VERBS
    from cotrain.lab.sim.embodiments import DEFAULT_TARGET
    from cotrain.lab.sim.scene import VERBS

    assert (_DEFAULT_TARGET, _DEFAULT_VERBS) == (DEFAULT_TARGET, VERBS)
    assert issubclass(StudyDataConfig, CorpusConfig)
    sim = typer.main.get_command(app).commands["sim"]  # type: ignore[attr-defined]
    params = {p.name: p for p in sim.commands["generate"].params}
    for name, field in CorpusConfig.model_fields.items():
        default = list(field.default) if isinstance(field.default, tuple) else field.default
        assert params[name].default == default, name
    assert params["questions_per_image"].opts == ["--questions"] and params["convert_to"].opts == ["--convert"]
    assert CorpusConfig(verbs=["push,pick"]).verbs == ("push", "pick")  # `--verbs push,pick` as before
    with pytest.raises(ConfigError, match="--vl-images 0: must be at least 1"):
        CorpusConfig(vl_images=0)
