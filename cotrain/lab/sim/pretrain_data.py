"""Pretraining data of the simulator backbone ("sim PaliGemma"): rendered scenes with text about them.

PaliGemma comes to a VLA knowing where things named in a sentence are in an image; a policy
trained from scratch has to learn that from a few thousand demonstrations, and at CPU budgets it
does not (docs/ablation.md). This module makes the corpus a small backbone learns it from, drawn
fresh at every step (no files), every scene and text from the base palette only: the concepts that
the co-training modalities are meant to carry (`scene.EXCLUSIVE`: purple, star, triangle) and the
held-out verb-colour-shape triples (`scene.HELD_OUT_COMBOS`) never appear, so pretraining cannot
explain what a study measures on its `unseen` split (tests/unit/lab/test_pretrain_data.py).

Sample kinds (prompt -> answer), with the point the answer names (for the dense patch target):
- `instruction`: a target-robot task, as the policy reads it -> the task object's point, and the
  goal zone's for push / place ("0.31 0.72" or "0.31 0.72 0.55 0.20"; x then y, image fractions);
- `point`: "Point to the red cube." -> that object's point;
- `gripper`: "Point to the gripper." -> the effector's point (the arm is drawn anywhere above the table);
- `question`: vision_language's scene questions (colour, shape, place, presence, count) -> the answer.

No captions: at ~135 bytes they are 4x the other samples' text, and one in a batch pads every row
to its length, which doubled the cost of a step; the questions carry the same facts in short form.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cotrain.lab.sim.embodiments import Embodiment
from cotrain.lab.sim.pretrain_config import DEFAULT_MIX
from cotrain.lab.sim.render import Renderer, sample_condition
from cotrain.lab.sim.scene import Scene, TaskSpec, demo_tasks, palette, sample_scene, sample_task
from cotrain.lab.sim.vl_data import scene_questions
from cotrain.lab.sim.world import World

__all__ = ["KINDS", "PretrainSample", "draw_sample", "pretrain_tasks"]

KINDS = ("instruction", "point", "gripper", "question")
GRIPPER_PROMPT = "Point to the gripper."
_EE_X, _EE_Y, _EE_Z = (0.08, 0.92), (0.08, 0.95), (0.0, 0.25)  # where the drawn effector may hover


@dataclass(frozen=True)
class PretrainSample:
    """One pretraining example: image [S, S, 3] uint8, prompt, answer, its kind, the scene it shows,
    and the table points (x, y) its answer names (empty for text-only answers)."""

    image: np.ndarray
    prompt: str
    answer: str
    kind: str
    scene: Scene
    points: tuple[tuple[float, float], ...]


def pretrain_tasks(verbs: Sequence[str]) -> list[TaskSpec]:
    """The tasks instructions are drawn from: the target robot's demonstration tasks (base palette,
    held-out combos removed), exactly what a robot-only baseline is trained on."""
    return demo_tasks("target", verbs)


def _fmt(points: Sequence[tuple[float, float]]) -> str:
    return " ".join(f"{x:.2f} {y:.2f}" for x, y in points)


def _text(kind: str, scene: Scene, world: World, rng: np.random.Generator) -> tuple[str, str, tuple]:
    if kind == "instruction":
        pts = [scene.objects[0].pos] + ([scene.goals[0].pos] if scene.task.verb != "pick" else [])
        return scene.task.instruction, _fmt(pts), tuple(pts)
    if kind == "point":
        item = scene.objects[int(rng.integers(len(scene.objects)))]
        return f"Point to the {item.colour} {item.shape}.", _fmt([item.pos]), (item.pos,)
    if kind == "gripper":
        xy = (float(world.ee[0]), float(world.ee[1]))
        return GRIPPER_PROMPT, _fmt([xy]), (xy,)
    question, answer = scene_questions(scene, rng, palette("target"), count=1)[0]
    return question, answer, ()


def draw_sample(rng: np.random.Generator, renderer: Renderer, embodiment: Embodiment, tasks: Sequence[TaskSpec],
                mix: Sequence[float] = DEFAULT_MIX) -> PretrainSample:
    """One sample drawn with `rng`: a target-palette scene with the effector at a random pose."""
    kind = KINDS[int(rng.choice(len(KINDS), p=np.asarray(mix) / np.sum(mix)))]
    scene = sample_scene(sample_task(tasks, rng), rng, palette("target"))
    world = World.start(scene, embodiment)
    world.ee = np.array([rng.uniform(*_EE_X), rng.uniform(*_EE_Y), rng.uniform(*_EE_Z) if embodiment.has_z else 0.0])
    world.grip_cmd = float(rng.random() < 0.3)
    image = renderer.render(world, sample_condition("normal", rng))
    prompt, answer, points = _text(kind, scene, world, rng)
    return PretrainSample(image, prompt, answer, kind, scene, points)
