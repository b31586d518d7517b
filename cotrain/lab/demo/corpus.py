"""The `make demo` corpus: simulated tabletop data written in real source formats, then converted.

Sources (all rendered by cotrain.lab.sim, so a policy trained on them can be run in the simulator):

| source          | format (writer)                                   | converter |
|-----------------|---------------------------------------------------|-----------|
| target robot    | LeRobot v3.0 (`sim.lerobot_writer`: parquet + h264)   | lerobot --embodiment sim_arm          |
| second robot    | ALOHA HDF5 with JPEG rows (`sim.aloha_writer`)       | aloha --task T --embodiment sim_gripper |
| captions        | COCO `captions_train2017.json` + JPEGs (`sim.vl_data`) | coco --captions all                  |
| human video     | EgoDex HDF5 hand poses + mp4 (`sim.egodex_writer`)    | egodex --cameras ego=top --fps 10     |
| annotations     | per-segment jsonl {episode, start, end, text}         | cotrain annotate --from               |

Held-out sets (other seed) for the offline evaluation: target-robot demonstrations (LeRobot) and
captions (COCO). The second robot performs fixed tasks (ALOHA datasets are one task per folder and
their files hold no instruction); it is the only source showing the shape `star`, the human video the
only one showing `triangle`, the captions the only one showing `purple` (cotrain.lab.sim's split design).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cotrain.lab.sim.recording import Recording

__all__ = ["DemoCorpusConfig", "DemoSource", "convert_demo_corpus", "write_demo_corpus"]


@dataclass(frozen=True)
class DemoCorpusConfig:
    """Sizes of the demo corpus (small: the whole demo must run in minutes on 2 cores)."""

    target_episodes: int = 24
    heldout_episodes: int = 6
    gripper_tasks: tuple[tuple[str, str, str], ...] = (("pick", "red", "star"), ("pick", "blue", "star"),
                                                         ("pick", "green", "ball"))
    gripper_episodes: int = 6  # per task
    human_episodes: int = 12
    vl_images: int = 48
    heldout_vl_images: int = 16
    image_size: int = 64
    verbs: tuple[str, ...] = ("pick",)
    seed: int = 0


@dataclass(frozen=True)
class DemoSource:
    """A written source: mixture name, format, role, where the raw data is, converter and options."""

    name: str
    format: str
    role: str
    raw: Path
    converter: str
    options: dict[str, Any]


def _task_recordings(verb: str, colour: str, shape: str, count: int, cfg: DemoCorpusConfig,
                     renderer: Any, stream: int) -> list[Recording]:
    """`count` expert demonstrations of one fixed task by the second robot (new layout each)."""
    from cotrain.lab.sim.embodiments import get_embodiment
    from cotrain.lab.sim.env import EpisodeSpec, episode_rng, solvable
    from cotrain.lab.sim.expert import ExpertParams
    from cotrain.lab.sim.recording import record_demo
    from cotrain.lab.sim.render import sample_condition
    from cotrain.lab.sim.scene import TaskSpec, palette, sample_scene

    emb, pal = get_embodiment("sim_gripper"), palette("cross_embodiment")
    task = TaskSpec(verb, colour, shape)
    out: list[Recording] = []
    index = 0
    while len(out) < count:
        rng = episode_rng(cfg.seed, stream, index)
        scene, params = sample_scene(task, rng, pal), ExpertParams.sample(rng)
        if solvable(scene, emb, params):
            spec = EpisodeSpec(scene, sample_condition("normal", rng), "cross_embodiment", "cross_embodiment",
                               cfg.seed, index)
            out.append(record_demo(spec, params, emb, renderer))
        index += 1
    return out


def _write_lerobot(root: Path, recordings: list[Recording], embodiment: str) -> None:
    from cotrain.lab.sim.embodiments import get_embodiment
    from cotrain.lab.sim.env import CAMERA
    from cotrain.lab.sim.lerobot_writer import LeRobotEpisode, write_lerobot_v30

    emb = get_embodiment(embodiment)
    episodes = [LeRobotEpisode({f"observation.images.{CAMERA}": r.images[CAMERA]}, r.state, r.action, r.instruction)
                for r in recordings]
    write_lerobot_v30(root, episodes, fps=emb.rate_hz, robot_type=embodiment, state_names=emb.state_names,
                      action_names=emb.action_names)


def _write_segments(path: Path, recordings: list[Recording]) -> None:
    """Subtask segments; episode ids as the LeRobot converter names them (the episode index)."""
    lines = [json.dumps({"episode": str(e), "start": s, "end": t, "text": text})
             for e, rec in enumerate(recordings) for s, t, text in rec.segments()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))


def _write_captions(root: Path, count: int, seed: int, renderer: Any) -> None:
    from cotrain import seeds
    from cotrain.lab.sim.embodiments import DEFAULT_TARGET, get_embodiment
    from cotrain.lab.sim.env import episode_rng
    from cotrain.lab.sim.render import sample_condition
    from cotrain.lab.sim.scene import TaskSpec, palette, sample_scene, sample_task
    from cotrain.lab.sim.vl_data import scene_captions, write_coco_captions
    from cotrain.lab.sim.world import World

    pal = palette("vision_language")
    tasks = [TaskSpec("pick", c, s) for c in pal.colours for s in pal.shapes]
    images, captions = [], []
    for i in range(count):
        rng = episode_rng(seed, seeds.SIM_VISION_LANGUAGE, i)
        scene = sample_scene(sample_task(tasks, rng), rng, pal)
        world = World.start(scene, get_embodiment(DEFAULT_TARGET))
        images.append(renderer.render(world, sample_condition("normal", rng), robot=False))
        captions.append(scene_captions(scene))
    write_coco_captions(root, images, captions)


def _write_human(root: Path, cfg: DemoCorpusConfig, renderer: Any) -> None:
    from cotrain.lab.sim.egodex_writer import write_egodex_episode
    from cotrain.lab.sim.embodiments import get_embodiment
    from cotrain.lab.sim.env import CAMERA
    from cotrain.lab.sim.generate import CorpusConfig, record_role

    corpus = CorpusConfig(seed=cfg.seed, verbs=cfg.verbs, image_size=cfg.image_size)
    fps = get_embodiment("human_hand").rate_hz
    for n, rec in enumerate(record_role("human", "human_hand", cfg.human_episodes, corpus, renderer)):
        write_egodex_episode(root / "train" / rec.spec.scene.task.verb / str(n), rec, fps=fps, camera=CAMERA)


def write_demo_corpus(raw: Path, cfg: DemoCorpusConfig = DemoCorpusConfig()) -> list[DemoSource]:
    """Write every source under `raw` and return them (training sources first, then held-out ones)."""
    from cotrain.lab.sim.aloha_writer import write_aloha_folder
    from cotrain.lab.sim.env import CAMERA
    from cotrain.lab.sim.generate import CorpusConfig, record_role
    from cotrain.lab.sim.render import Renderer

    renderer = Renderer(cfg.image_size)
    corpus = CorpusConfig(seed=cfg.seed, verbs=cfg.verbs, image_size=cfg.image_size)
    target = record_role("target", "sim_arm", cfg.target_episodes, corpus, renderer)
    _write_lerobot(raw / "lerobot" / "sim_arm", target, "sim_arm")
    _write_segments(raw / "annotations" / "sim_arm.jsonl", target)
    heldout_cfg = CorpusConfig(seed=cfg.seed + 1000, verbs=cfg.verbs, image_size=cfg.image_size)
    _write_lerobot(raw / "heldout" / "sim_arm", record_role("target", "sim_arm", cfg.heldout_episodes, heldout_cfg,
                                                            renderer), "sim_arm")
    sources = [DemoSource("target", "LeRobot v3.0", "target robot", raw / "lerobot" / "sim_arm", "lerobot",
                          {"embodiment": "sim_arm"})]
    for k, (verb, colour, shape) in enumerate(cfg.gripper_tasks):
        recs = _task_recordings(verb, colour, shape, cfg.gripper_episodes, cfg, renderer, stream=3000 + k)
        folder = raw / "aloha" / f"{verb}_{colour}_{shape}"
        write_aloha_folder(folder, recs)
        sources.append(DemoSource(f"gripper_{colour}_{shape}", "ALOHA HDF5", "cross-embodiment", folder, "aloha",
                                  {"embodiment": "sim_gripper", "task": recs[0].instruction}))
    _write_human(raw / "egodex", cfg, renderer)
    sources.append(DemoSource("human", "EgoDex", "human video", raw / "egodex", "egodex",
                              {"cameras": f"ego={CAMERA}", "fps": 10}))
    _write_captions(raw / "coco", cfg.vl_images, cfg.seed, renderer)
    sources.append(DemoSource("captions", "COCO captions", "vision-language", raw / "coco", "coco",
                              {"captions": "all"}))
    sources.append(DemoSource("subtasks", "segment jsonl", "dense annotations", raw / "annotations" / "sim_arm.jsonl",
                              "annotations", {}))
    _write_captions(raw / "heldout" / "coco", cfg.heldout_vl_images, cfg.seed + 1000, renderer)
    sources.append(DemoSource("heldout_target", "LeRobot v3.0", "held-out", raw / "heldout" / "sim_arm", "lerobot",
                              {"embodiment": "sim_arm"}))
    sources.append(DemoSource("heldout_captions", "COCO captions", "held-out", raw / "heldout" / "coco", "coco",
                              {"captions": "all"}))
    return sources


def convert_demo_corpus(sources: list[DemoSource], data: Path) -> dict[str, Path]:
    """Convert every source with its converter into `data/<name>` (annotations over the converted target)."""
    from cotrain.annotate.segments import AnnotateOptions, annotate
    from cotrain.convert.pipeline import convert
    from cotrain.convert.spec import CONVERTERS, RunOptions

    run = RunOptions(progress=False)
    out: dict[str, Path] = {}
    for src in sources:
        dest = data / src.name
        if src.converter == "annotations":
            annotate(out["target"], dest, AnnotateOptions(name=src.name, from_file=str(src.raw)), run)
        else:
            options = CONVERTERS.get(src.converter).options(name=src.name, **src.options)
            convert(src.converter, src.raw, dest, options, run)
        out[src.name] = dest
    return out
