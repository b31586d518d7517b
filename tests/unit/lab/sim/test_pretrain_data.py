"""The simulator backbone's pretraining data: base palette only, deterministic, answers exact."""

from __future__ import annotations

import re

import numpy as np
import pytest

from cotrain.lab.sim.embodiments import get_embodiment
from cotrain.lab.sim.pretrain_data import GRIPPER_PROMPT, KINDS, draw_sample, pretrain_tasks
from cotrain.lab.sim.render import Renderer
from cotrain.lab.sim.scene import BASE_COLOURS, BASE_SHAPES, COLOURS, EXCLUSIVE, GOAL_KINDS, HELD_OUT_COMBOS, VERBS

_WORDS = re.compile(r"[a-z]+")


@pytest.fixture(scope="module")
def samples() -> list:
    rng = np.random.default_rng(0)
    renderer, arm = Renderer(64), get_embodiment("sim_arm")
    tasks = pretrain_tasks(VERBS)
    return [draw_sample(rng, renderer, arm, tasks) for _ in range(1500)]


def test_no_held_out_concept_in_any_text(samples: list) -> None:
    for s in samples:
        words = set(_WORDS.findall(f"{s.prompt} {s.answer}".lower()))
        assert not words & set(EXCLUSIVE), (s.prompt, s.answer)


def test_scenes_show_the_base_palette_only(samples: list) -> None:
    for s in samples:
        for item in s.scene.objects:
            assert item.colour in BASE_COLOURS and item.shape in BASE_SHAPES
        for goal in s.scene.goals:
            assert goal.colour in BASE_COLOURS and goal.shape in GOAL_KINDS


def test_no_held_out_combination_is_instructed(samples: list) -> None:
    instructed = {(s.scene.task.verb, s.scene.task.colour, s.scene.task.shape) for s in samples
                  if s.kind == "instruction"}
    assert instructed and not instructed & set(HELD_OUT_COMBOS)
    # every scene's task is a demonstration task too (the images come from the same scenes)
    assert not {(s.scene.task.verb, s.scene.task.colour, s.scene.task.shape) for s in samples} & set(HELD_OUT_COMBOS)


def test_every_kind_appears_and_points_are_exact(samples: list) -> None:
    assert {s.kind for s in samples} == set(KINDS)
    for s in samples:
        if s.kind == "instruction":
            assert s.prompt == s.scene.task.instruction
            assert s.points[0] == s.scene.objects[0].pos
            assert len(s.points) == (1 if s.scene.task.verb == "pick" else 2)
        if s.kind == "gripper":
            assert s.prompt == GRIPPER_PROMPT
        if s.points:
            values = [float(v) for v in s.answer.split()]
            assert np.allclose(values, np.ravel(s.points), atol=0.005)


def test_images_hold_no_exclusive_colour(samples: list) -> None:
    # purple is the one exclusive colour: its exact shade never appears in a rendered pixel's
    # neighbourhood of hue (lighting jitter is +-8 %, so test a generous box around it)
    purple = np.array(COLOURS["purple"], dtype=np.int16)
    for s in samples[:200]:
        close = np.abs(s.image.astype(np.int16) - purple).max(axis=-1) < 20
        assert not close.any()


def test_same_seed_same_samples() -> None:
    renderer, arm, tasks = Renderer(64), get_embodiment("sim_arm"), pretrain_tasks(VERBS)
    a = [draw_sample(np.random.default_rng(5), renderer, arm, tasks) for _ in range(1)]
    b = [draw_sample(np.random.default_rng(5), renderer, arm, tasks) for _ in range(1)]
    assert a[0].prompt == b[0].prompt and a[0].answer == b[0].answer
    assert np.array_equal(a[0].image, b[0].image)
