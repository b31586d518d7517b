"""Every random stream cotrain draws from, by name: the last entry of each `SeedSequence` entropy.

A stream is seeded by `np.random.SeedSequence([*context, STREAM])` (or, in the simulator, by
`[seed, STREAM + offset, index, attempt]`), so two streams never share draws even with the same
seed and step. The numbers are part of the API: changing one changes every plan, batch, noise draw
or simulated episode that depends on it, so they never change; a new stream takes a new number.
This module is a foundation: it imports nothing else from cotrain.
"""

from __future__ import annotations

import numpy as np

# --- the mixture plan and the loader (cotrain.mix) -------------------------------------------------
EPOCH_PERMUTATION = 1  # [source_seed, epoch, 1]: a source's sample order in one epoch (sampler.py)
BATCH_SPREAD = 2  # [seed, step, 2]: where each source's slots sit inside a global batch (sampler.py)
BAD_SAMPLE_REPLACEMENT = 3  # [source_seed, draw, attempt, 3]: the sample replacing a bad one (batch.py)

# --- training and evaluation -----------------------------------------------------------------------
TRAIN_NOISE = 0xF10  # [run seed, step, 0xF10]: flow noise and times of a global batch (train/loop.py)
VALIDATION_NOISE = 0x7A1  # [run seed, 0x7A1]: the validation noise's seed (train/validation.py)

# --- the simulator (cotrain.lab), `episode_rng(seed, stream, index, attempt)` ------------------------
SIM_DEMO_ROLES = 0  # demo roles take streams 0..3 (their index in lab.sim.env.ROLES)
SIM_EVAL = 1000  # + the evaluation split's index: evaluation episodes
SIM_VISION_LANGUAGE = 2000  # scenes of the vision-language images
SIM_RANDOM_POLICY = 3000  # + the split's index: the random policy's actions during evaluation
SIM_RECOVERY = 4000  # [seed, 4000 + role index, demo index]: where a recovery demo's grasp misses (recording.py)


def stream(*entropy: int) -> np.random.Generator:
    """A generator seeded by `SeedSequence(entropy)`; by convention the last entry names the stream."""
    return np.random.default_rng(np.random.SeedSequence(list(entropy)))


def stream_seed(*entropy: int) -> int:
    """One uint64 seed (e.g. for a `torch.Generator`) from `SeedSequence(entropy)`."""
    return int(np.random.SeedSequence(list(entropy)).generate_state(1, dtype=np.uint64)[0])
