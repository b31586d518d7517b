"""Tabletop scenes and tasks, and the split design that decides which modality sees which concept.

A scene is a 1 x 1 table (x right, y down in the image) holding 3 graspable objects (a colour and a
shape each) and 2 flat goal zones (a coloured `plate` or `mat`). A task names one object and, for
push and place, one goal zone:

    pick up the red cube | push the red cube to the blue plate | place the red cube on the blue mat

The split design (the point of the benchmark, see docs/sim.md) is data in this module:

- every demonstration or caption is made by one ROLE: `target` (the evaluated robot), `cross_embodiment`
  (the other robot), `human` (hand videos) or `vision_language` (captions and QA about scenes);
- each role has a PALETTE (colours and shapes it may show, as target or distractor); the base palette
  is shared, and each co-training role adds one concept nobody else shows (`EXCLUSIVE`);
- `HELD_OUT_COMBOS` are (verb, colour, shape) triples of base concepts that no demonstration shows;
- evaluation's `unseen` split draws tasks from four groups, one per exclusive concept plus `combo`,
  so per-group success says which modality transferred.

All sampling takes an explicit `numpy.random.Generator`; nothing here reads global state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (205, 45, 40), "green": (40, 160, 65), "blue": (40, 80, 210), "yellow": (235, 200, 35),
    "purple": (140, 60, 185),
}
# The `colour` shift renders each colour as another shade of the same name (a different paint batch).
SHIFTED_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (165, 25, 60), "green": (95, 175, 40), "blue": (30, 120, 200), "yellow": (245, 170, 60),
    "purple": (175, 85, 175),
}
SHAPES = ("cube", "ball", "ring", "star", "triangle")
GOAL_KINDS = ("plate", "mat")
VERBS = ("pick", "push", "place")

BASE_COLOURS = ("red", "green", "blue", "yellow")
BASE_SHAPES = ("cube", "ball", "ring")
ROLES = ("target", "cross_embodiment", "human", "vision_language")
# concept -> the only co-training role whose data shows it (the target robot never does).
EXCLUSIVE: dict[str, str] = {"purple": "vision_language", "star": "cross_embodiment", "triangle": "human"}
# (verb, colour, shape) triples of base concepts that no demonstration of any role shows.
HELD_OUT_COMBOS: tuple[tuple[str, str, str], ...] = (
    ("push", "yellow", "ball"), ("place", "green", "ring"), ("pick", "blue", "cube"), ("place", "red", "ball"),
)
# Unseen evaluation groups: name -> the concept that makes a task unseen (None: a held-out combo).
UNSEEN_GROUPS: dict[str, str | None] = {"vision_language": "purple", "cross_embodiment": "star",
                                        "human": "triangle", "combo": None}
EVAL_SPLITS = ("seen", "unseen", "seen_shift", "unseen_shift")
# Opt-in diagnostic split: the layouts and tasks of the target robot's own demonstrations, to tell a policy
# that cannot control (fails there too) from one that cannot generalise (solves them, fails `seen`).
TRAIN_SPLIT = "train"
ALL_SPLITS = (*EVAL_SPLITS, TRAIN_SPLIT)

OBJECT_RADIUS = 0.075
GOAL_RADIUS = 0.11
_MARGIN = 0.15  # items stay this far from the table edge
_MIN_GAP = 0.21  # between item centres
_START = (0.5, 0.92)


@dataclass(frozen=True)
class Palette:
    """The colours and shapes one role may show."""

    colours: tuple[str, ...]
    shapes: tuple[str, ...]


def palette(role: str) -> Palette:
    """Base concepts plus the role's exclusive ones (the target role has none)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    extra = [c for c, r in EXCLUSIVE.items() if r == role]
    return Palette(BASE_COLOURS + tuple(c for c in extra if c in COLOURS),
                   BASE_SHAPES + tuple(s for s in extra if s in SHAPES))


@dataclass(frozen=True)
class TaskSpec:
    """One instruction: verb, the object (colour, shape) and for push/place the goal (colour, kind)."""

    verb: str
    colour: str
    shape: str
    goal_colour: str | None = None
    goal_kind: str | None = None

    @property
    def instruction(self) -> str:
        obj = f"the {self.colour} {self.shape}"
        goal = f"the {self.goal_colour} {self.goal_kind}"
        if self.verb == "pick":
            return f"pick up {obj}"
        return f"push {obj} to {goal}" if self.verb == "push" else f"place {obj} on {goal}"

    @property
    def concepts(self) -> frozenset[str]:
        """Every word of the task that names a concept (verb, colours, shapes, goal kind)."""
        return frozenset(c for c in (self.verb, self.colour, self.shape, self.goal_colour, self.goal_kind) if c)


def check_verbs(verbs: Sequence[str]) -> tuple[str, ...]:
    """The verbs, checked to be a non-empty subset of VERBS."""
    unknown = [v for v in verbs if v not in VERBS]
    if unknown or not verbs:
        raise ValueError(f"verbs must be a non-empty subset of {', '.join(VERBS)}, got {', '.join(verbs) or 'none'}")
    return tuple(v for v in VERBS if v in verbs)


def demo_tasks(role: str, verbs: Sequence[str] = VERBS) -> list[TaskSpec]:
    """All tasks a demonstration role may perform: its palette, minus the held-out combos."""
    if role == "vision_language":
        raise ValueError("the vision_language role has no demonstrations")
    pal = palette(role)
    return [t for t in _all_tasks(pal.colours, pal.shapes, pal.colours, check_verbs(verbs))
            if (t.verb, t.colour, t.shape) not in HELD_OUT_COMBOS]


def unseen_tasks(group: str, verbs: Sequence[str] = VERBS) -> list[TaskSpec]:
    """The evaluation tasks of one unseen group (goals always in base colours); empty when the
    group's held-out combos use none of `verbs`."""
    if group not in UNSEEN_GROUPS:
        raise ValueError(f"unknown unseen group {group!r}; groups: {', '.join(UNSEEN_GROUPS)}")
    concept = UNSEEN_GROUPS[group]
    if concept is None:
        return [t for t in _all_tasks(BASE_COLOURS, BASE_SHAPES, BASE_COLOURS, check_verbs(verbs))
                if (t.verb, t.colour, t.shape) in HELD_OUT_COMBOS]
    colours = (concept,) if concept in COLOURS else BASE_COLOURS
    shapes = (concept,) if concept in SHAPES else BASE_SHAPES
    return _all_tasks(colours, shapes, BASE_COLOURS, check_verbs(verbs))


def _all_tasks(colours: Sequence[str], shapes: Sequence[str], goal_colours: Sequence[str],
               verbs: Sequence[str]) -> list[TaskSpec]:
    out = []
    for verb in verbs:
        for colour in colours:
            for shape in shapes:
                if verb == "pick":
                    out.append(TaskSpec(verb, colour, shape))
                    continue
                out += [TaskSpec(verb, colour, shape, gc, gk) for gc in goal_colours for gk in GOAL_KINDS]
    return out


@dataclass(frozen=True)
class Item:
    """An object (shape) or a goal zone (kind) on the table, at `pos` (x, y) in [0, 1]."""

    colour: str
    shape: str
    pos: tuple[float, float]


@dataclass(frozen=True)
class Scene:
    """A layout and its task: `objects[0]` is the task's object, `goals[0]` its goal zone."""

    task: TaskSpec
    objects: tuple[Item, ...]
    goals: tuple[Item, ...]
    start: tuple[float, float] = _START
    meta: dict[str, str] = field(default_factory=dict, compare=False)


def sample_task(tasks: Sequence[TaskSpec], rng: np.random.Generator) -> TaskSpec:
    """One task drawn uniformly with `rng`."""
    return tasks[int(rng.integers(len(tasks)))]


def sample_scene(task: TaskSpec, rng: np.random.Generator, distractors: Palette) -> Scene:
    """Place the task's object, two distractors and two goal zones at random, well apart.

    One distractor shares the object's shape and one its colour (when the palette allows), so a
    policy must read both words of the instruction; distractors come from `distractors` only, so a
    role's data never shows a concept outside its palette.
    """
    objects = [(task.colour, task.shape), *_distractor_objects(task, rng, distractors)]
    goal = (task.goal_colour or _pick(distractors.colours, rng), task.goal_kind or _pick(GOAL_KINDS, rng))
    other_goal = _other_goal(goal, rng, distractors)
    positions = _positions(len(objects) + 2, rng)
    items = [Item(c, s, p) for (c, s), p in zip(objects, positions)]
    goals = (Item(goal[0], goal[1], positions[-2]), Item(other_goal[0], other_goal[1], positions[-1]))
    start = (float(_START[0] + rng.uniform(-0.2, 0.2)), _START[1])
    return Scene(task, tuple(items), goals, start)


def _pick(options: Sequence[str], rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))]


def _distractor_objects(task: TaskSpec, rng: np.random.Generator, pal: Palette) -> list[tuple[str, str]]:
    same_shape = [(c, task.shape) for c in pal.colours if c != task.colour and task.shape in pal.shapes]
    same_colour = [(task.colour, s) for s in pal.shapes if s != task.shape and task.colour in pal.colours]
    anything = [(c, s) for c in pal.colours for s in pal.shapes if (c, s) != (task.colour, task.shape)]
    chosen: list[tuple[str, str]] = []
    for pool in (same_shape or anything, same_colour or anything):
        pool = [p for p in pool if p not in chosen]
        chosen.append(pool[int(rng.integers(len(pool)))])
    return chosen


def _other_goal(goal: tuple[str, str], rng: np.random.Generator, pal: Palette) -> tuple[str, str]:
    options = [(c, k) for c in pal.colours for k in GOAL_KINDS if c != goal[0]]
    return options[int(rng.integers(len(options)))]


def _positions(count: int, rng: np.random.Generator) -> list[tuple[float, float]]:
    """`count` points in the table's inner square, pairwise >= _MIN_GAP apart and clear of the start."""
    for _ in range(1000):
        pts = rng.uniform(_MARGIN, 1 - _MARGIN, size=(count, 2))
        gaps = np.linalg.norm(pts[:, None] - pts[None], axis=-1) + np.eye(count) * 9
        if gaps.min() >= _MIN_GAP and np.linalg.norm(pts - np.array(_START), axis=1).min() >= 0.2:
            return [(float(x), float(y)) for x, y in pts]
    raise RuntimeError("could not place the items; the layout constraints are too tight")


def concepts_of_scene(scene: Scene) -> frozenset[str]:
    """Every colour, shape and goal kind visible in the scene, plus the task's words."""
    seen = {c for item in scene.objects for c in (item.colour, item.shape)}
    seen |= {c for goal in scene.goals for c in (goal.colour, goal.shape)}
    return frozenset(seen | scene.task.concepts)


def split_table() -> list[dict[str, str]]:
    """One row per concept: which roles' data show it (for docs and `cotrain sim splits`)."""
    rows = []
    for concept in (*COLOURS, *SHAPES):
        roles = [r for r in ROLES if concept in palette(r).colours + palette(r).shapes]
        rows.append({"concept": concept, "shown_by": ", ".join(roles)})
    return rows
