"""`cotrain sim generate`: the co-training corpus of the simulated benchmark, in real source formats.

Layout under OUT (each folder converts with the named `cotrain convert` converter; `corpus.json`
lists them with the options to use, so scripts need not know this layout):

    corpus.json
    robot/<target>/      LeRobot v3.0   role target            (the evaluated robot)
    robot/<other>/       LeRobot v3.0   role cross_embodiment  (the other robot, other action space)
    human/train/<verb>/<N>.hdf5 + .mp4   EgoDex   role human   (a hand doing the same kind of tasks)
    vl/captions/         COCO captions  role vision_language   (3 captions per rendered scene)
    vl/qa/               HF parquet     role vision_language   (question-answer conversations)

Each role shows only its palette (scene.py), so concepts exclusive to one modality reach the target
robot's evaluation only through co-training. Every episode and image is a pure function of
(`seed`, role, index): regenerating with the same arguments gives byte-identical files (with the
same PyAV/libx264 and h5py builds; the videos' bytes depend on the encoder version).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from cotrain import seeds
from cotrain.errors import ConfigError
from cotrain.lab.corpus_config import CorpusConfig
from cotrain.lab.sim.egodex_writer import write_egodex_episode
from cotrain.lab.sim.embodiments import DEFAULT_TARGET, get_embodiment, other_robot
from cotrain.lab.sim.env import CAMERA, episode_rng, sample_demo_episode
from cotrain.lab.sim.lerobot_writer import LeRobotEpisode, write_lerobot_v30
from cotrain.lab.sim.recording import Recording, record_demo
from cotrain.lab.sim.render import Renderer, sample_condition
from cotrain.lab.sim.scene import ROLES, VERBS, TaskSpec, demo_tasks, palette, sample_scene, sample_task
from cotrain.lab.sim.vl_data import scene_captions, scene_questions, write_coco_captions, write_hf_conversations
from cotrain.lab.sim.world import World

__all__ = ["CORPUS_FILE", "CorpusConfig", "convert_corpus", "generate_corpus", "load_corpus", "record_role",
           "split_summary"]

CORPUS_FILE = "corpus.json"
_VL_STREAM = seeds.SIM_VISION_LANGUAGE  # scene stream of the vision-language images (demo roles use 0..3)


def record_role(role: str, embodiment: str, count: int, cfg: CorpusConfig, renderer: Renderer) -> list[Recording]:
    """Demonstrations 0..count-1 of a role, performed by `embodiment`."""
    emb = get_embodiment(embodiment)
    out = []
    for i in range(count):
        spec, params = sample_demo_episode(role, i, cfg.seed, emb, verbs=cfg.verbs)
        out.append(record_demo(spec, params, emb, renderer, miss=_miss(role, i, cfg)))
    return out


def _miss(role: str, index: int, cfg: CorpusConfig) -> np.ndarray | None:
    """Where demo `index` of a robot role misses its first grasp (a step's length in a random
    direction), for a `cfg.recovery` share of them; None for the rest and for human demos."""
    if role == "human" or cfg.recovery <= 0:
        return None
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, seeds.SIM_RECOVERY + ROLES.index(role), index]))
    if rng.random() >= cfg.recovery:
        return None
    angle = rng.uniform(0.0, 2 * np.pi)
    return 0.05 * np.array([np.cos(angle), np.sin(angle)])


def _write_robot(out: Path, recordings: list[Recording], embodiment: str) -> None:
    """The LeRobot dataset `robot/<embodiment>` and its subtask segments `annotations/<embodiment>.jsonl`."""
    emb = get_embodiment(embodiment)
    episodes = [LeRobotEpisode({f"observation.images.{CAMERA}": r.images[CAMERA]}, r.state, r.action, r.instruction)
                for r in recordings]
    write_lerobot_v30(out / "robot" / embodiment, episodes, fps=emb.rate_hz, robot_type=embodiment,
                      state_names=emb.state_names, action_names=emb.action_names)
    # Episode ids as the LeRobot converter names them (str(episode_index)); spans in source frames.
    lines = [json.dumps({"episode": str(e), "start": start, "end": end, "text": text})
             for e, rec in enumerate(recordings) for start, end, text in rec.segments()]
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    (out / "annotations" / f"{embodiment}.jsonl").write_text("".join(line + "\n" for line in lines))


def _write_human(root: Path, recordings: list[Recording]) -> None:
    fps = get_embodiment("human_hand").rate_hz
    counters: dict[str, int] = {}
    for rec in recordings:
        verb = rec.spec.scene.task.verb
        n = counters[verb] = counters.get(verb, -1) + 1
        write_egodex_episode(root / "train" / verb / str(n), rec, fps=fps, camera=CAMERA)


def _write_vl(root: Path, cfg: CorpusConfig, renderer: Renderer) -> None:
    """Scenes of the vision_language palette, rendered without any effector."""
    pal, tasks = palette("vision_language"), _vl_tasks()
    images, captions, qa = [], [], []
    for i in range(cfg.vl_images):
        rng = episode_rng(cfg.seed, _VL_STREAM, i)
        scene = sample_scene(sample_task(tasks, rng), rng, pal)
        world = World.start(scene, get_embodiment(DEFAULT_TARGET))
        images.append(renderer.render(world, sample_condition("normal", rng), robot=False))
        captions.append(scene_captions(scene))
        qa.append(scene_questions(scene, rng, pal, cfg.questions_per_image))
    write_coco_captions(root / "captions", images, captions)
    write_hf_conversations(root / "qa" / "train-00000-of-00001.parquet", images, qa)


def _vl_tasks() -> list[TaskSpec]:
    """Captioned scenes are laid out like task scenes of the VL palette (the task itself is not shown)."""
    pal = palette("vision_language")
    return [TaskSpec("pick", c, s) for c in pal.colours for s in pal.shapes]


def _sources(cfg: CorpusConfig, other: str) -> list[dict[str, Any]]:
    return [
        {"name": cfg.target, "role": "target", "converter": "lerobot", "path": f"robot/{cfg.target}",
         "modality": "robot", "options": {"embodiment": cfg.target}, "episodes": cfg.episodes},
        {"name": other, "role": "cross_embodiment", "converter": "lerobot", "path": f"robot/{other}",
         "modality": "robot", "options": {"embodiment": other}, "episodes": cfg.other_episodes},
        # Human video is recorded at 30 Hz; converting at the robots' rate gives chunks of the same duration.
        {"name": "human_hand", "role": "human", "converter": "egodex", "path": "human", "modality": "human_video",
         "options": {"cameras": f"ego={CAMERA}", "fps": get_embodiment(cfg.target).rate_hz},
         "episodes": cfg.human_episodes},
        {"name": "sim_captions", "role": "vision_language", "converter": "coco", "path": "vl/captions",
         "modality": "vision_language", "options": {"captions": "all"}, "images": cfg.vl_images},
        {"name": "sim_qa", "role": "vision_language", "converter": "hf-parquet", "path": "vl/qa",
         "modality": "vision_language", "options": {}, "images": cfg.vl_images},
        # Dense subtask annotations: `cotrain annotate <converted robot> OUT --from <jsonl>`.
        *({"name": f"{robot}_subtasks", "role": role, "converter": "annotations", "path": f"annotations/{robot}.jsonl",
           "modality": "annotation", "annotates": robot, "options": {}}
          for robot, role in ((cfg.target, "target"), (other, "cross_embodiment"))),
    ]


def generate_corpus(out: str | Path, cfg: CorpusConfig = CorpusConfig(),  # noqa: B008  (frozen config)
                    *, overwrite: bool = False) -> dict[str, Any]:
    """Write the corpus under `out` and return the contents of its corpus.json (plus timing)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out} exists and is not empty; choose another OUT or pass --overwrite")
    if overwrite and (out / CORPUS_FILE).is_file():
        import shutil

        shutil.rmtree(out)
    start = time.perf_counter()
    renderer, other = Renderer(cfg.image_size), other_robot(cfg.target)
    _write_robot(out, record_role("target", cfg.target, cfg.episodes, cfg, renderer), cfg.target)
    _write_robot(out, record_role("cross_embodiment", other, cfg.other_episodes, cfg, renderer), other)
    _write_human(out / "human", record_role("human", "human_hand", cfg.human_episodes, cfg, renderer))
    _write_vl(out / "vl", cfg, renderer)
    corpus = {"config": cfg.model_dump(mode="json"), "sources": _sources(cfg, other),
              "splits": split_summary(cfg.target, cfg.verbs)}
    (out / CORPUS_FILE).write_text(json.dumps(corpus, indent=1))
    return {**corpus, "out": str(out), "seconds": round(time.perf_counter() - start, 2)}


def split_summary(target: str, verbs: tuple[str, ...] = VERBS) -> dict[str, Any]:
    """Which colours and shapes each role shows, and how many demo tasks it has."""
    summary: dict[str, Any] = {"target": target}
    for role in ROLES:
        pal = palette(role)
        entry: dict[str, Any] = {"colours": list(pal.colours), "shapes": list(pal.shapes)}
        if role != "vision_language":
            entry["tasks"] = len(demo_tasks(role, verbs))
        summary[role] = entry
    return summary


def load_corpus(root: str | Path) -> dict[str, Any]:
    """The corpus description written by `cotrain sim generate` in `root`."""
    path = Path(root) / CORPUS_FILE
    if not path.is_file():
        raise ConfigError(f"{path} not found: not a corpus written by `cotrain sim generate`")
    return json.loads(path.read_text())


def convert_corpus(root: str | Path, out: str | Path, *, workers: int = 1, overwrite: bool = False,
                   shard_size: int = 1000) -> list[dict[str, Any]]:
    """Convert every source of a generated corpus with its converter into `out/<name>` (annotation
    sources with `cotrain annotate` over their robot's converted dataset, which comes first)."""
    from cotrain.annotate.segments import AnnotateOptions, annotate
    from cotrain.convert.pipeline import convert
    from cotrain.convert.spec import CONVERTERS, RunOptions

    root, out = Path(root), Path(out)
    run = RunOptions(workers=workers, overwrite=overwrite, progress=False)
    reports = []
    for source in load_corpus(root)["sources"]:
        common = {"name": source["name"], "shard_size": shard_size, **source["options"]}
        if source["converter"] == "annotations":
            annotate_options = AnnotateOptions(**common, from_file=str(root / source["path"]))
            report, _ = annotate(out / source["annotates"], out / source["name"], annotate_options, run)
        else:
            options = CONVERTERS.get(source["converter"]).options(**common)
            report = convert(source["converter"], root / source["path"], out / source["name"], options, run)
        reports.append({"name": source["name"], "role": source["role"], **report.to_json()})
    return reports

