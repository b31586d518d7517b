"""Recovery demonstrations: one missed grasp, recorded with the expert's corrections; off by default."""

from __future__ import annotations

import numpy as np
import pytest

from cotrain.errors import ConfigError
from cotrain.lab.corpus_config import CorpusConfig
from cotrain.lab.sim.generate import record_role
from cotrain.lab.sim.render import Renderer


def _demos(recovery: float, role: str = "target", robot: str = "sim_arm", count: int = 4) -> list:
    return record_role(role, robot, count, CorpusConfig(verbs=("pick",), recovery=recovery, image_size=32),
                       Renderer(32))


def test_a_missed_grasp_is_reopened_and_retried() -> None:
    for demo in _demos(1.0):
        phases = list(demo.phases)
        first_grasp = next(t for t, p in enumerate(phases) if p.startswith("grasp"))
        # the executed close missed: the next frame is closed on nothing (closure 1, not 0.6 on an object)
        assert demo.closure[first_grasp + 1] == 1.0
        assert phases[first_grasp + 1] == "open the gripper"
        # the recorded action there is still the expert's: close in place, not the executed miss
        assert demo.action[first_grasp, 3] == 1.0 and np.linalg.norm(demo.action[first_grasp, :2]) < 0.02
        # and it grasps again later, then lifts the object (closure 0.6: closed on an object)
        assert any(p.startswith("grasp") for p in phases[first_grasp + 2:]) and phases[-1].startswith("lift")
        assert np.isclose(demo.closure[-1], 0.6)


def test_off_by_default_and_the_same_demos_otherwise() -> None:
    plain = record_role("target", "sim_arm", 4, CorpusConfig(verbs=("pick",), image_size=32), Renderer(32))
    for a, b in zip(plain, _demos(0.0)):
        assert np.array_equal(a.action, b.action) and a.phases == b.phases
        assert "open the gripper" not in a.phases


def test_share_and_determinism() -> None:
    a = _demos(0.5, count=12)
    b = _demos(0.5, count=12)
    with_miss = ["open the gripper" in d.phases for d in a]
    assert 0 < sum(with_miss) < 12
    assert with_miss == ["open the gripper" in d.phases for d in b]
    assert all(np.array_equal(x.action, y.action) for x, y in zip(a, b))


def test_human_demos_never_miss() -> None:
    assert all("open the gripper" not in d.phases for d in _demos(1.0, role="human", robot="human_hand", count=3))


def test_bad_share_is_refused() -> None:
    with pytest.raises((ConfigError, ValueError)):
        CorpusConfig(recovery=1.5)
