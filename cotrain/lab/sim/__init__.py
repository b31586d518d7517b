"""cotrain.lab.sim: a small procedurally rendered tabletop benchmark for co-training studies.

Modules: `scene` (objects, tasks and the split design), `world` (kinematic physics), `embodiments`
(action spaces and state layouts), `render` (numpy rendering and shift conditions), `expert`
(scripted demonstrations), `env` (gym-style API and episode samplers), `generate` (demonstrations
and vision-language data in real source formats), `evaluate` (closed-loop success per split).
Nothing here imports torch; heavy writers (PyAV, pyarrow, h5py, PIL) are imported inside functions.
"""

from cotrain.lab.sim.embodiments import EMBODIMENTS, Embodiment, get_embodiment
from cotrain.lab.sim.env import EpisodeSpec, TabletopEnv, sample_demo_episode, sample_eval_episode
from cotrain.lab.sim.scene import EVAL_SPLITS, EXCLUSIVE, HELD_OUT_COMBOS, ROLES, TaskSpec

__all__ = [
    "EMBODIMENTS", "EVAL_SPLITS", "EXCLUSIVE", "HELD_OUT_COMBOS", "ROLES", "Embodiment", "EpisodeSpec", "TabletopEnv",
    "TaskSpec", "get_embodiment", "sample_demo_episode", "sample_eval_episode",
]
