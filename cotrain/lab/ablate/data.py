"""The study's data: the simulated corpus converted, the target robot's action tokens, held-out sets.

`mixtures/lin2026/*.yaml` point into one folder DATA (`data/lin2026` at the repository root). When
its datasets are missing, `prepare_study_data(DATA, cfg)` makes them with the real tools, exactly as
the commands in docs/ablation.md would:

    DATA/raw/                      `cotrain sim generate` (LeRobot v3.0, EgoDex, COCO, HF parquet, jsonl)
    DATA/<name>/                   `--convert`: sim_arm, sim_gripper, human_hand, sim_captions, sim_qa,
                                   sim_arm_subtasks, sim_gripper_subtasks
    DATA/tokenizer/                `cotrain tokenizer fit DATA/<target>` (FAST)
    DATA/<target>_tokens/          `cotrain convert tokens DATA/<target> --tokenizer DATA/tokenizer`
    DATA/heldout/raw/, heldout/<name>/   a second corpus from another seed (new layouts, new scenes):
                                   the offline evaluation's held-out robot and vision-language data
    DATA/study.json                what was prepared (the corpus configs), read back by the runner

Each step is skipped when its output is complete (a dataset with its manifest, a tokenizer with its
config), so an interrupted preparation continues; `study.json` is written last. The held-out corpus
uses seed `seed + HELDOUT_SEED_OFFSET`, whose episodes and scenes share no generator with training.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cotrain.atomic import write_text_atomic
from cotrain.dataset.manifest import MANIFEST_NAME
from cotrain.errors import ConfigError
from cotrain.lab.ablate.config import HELDOUT_SEED_OFFSET, StudyDataConfig
from cotrain.lab.corpus_config import CorpusConfig

log = logging.getLogger(__name__)
__all__ = ["HELDOUT_SEED_OFFSET", "STUDY_FILE", "StudyData", "StudyDataConfig", "load_study_data",
           "prepare_study_data", "study_dataset_names"]

STUDY_FILE = "study.json"
_OTHER = {"sim_arm": "sim_gripper", "sim_gripper": "sim_arm"}


@dataclass(frozen=True)
class StudyData:
    """A prepared (or user-provided) study folder, as the runner needs it."""

    root: Path
    target: str
    verbs: tuple[str, ...]
    image_size: int
    heldout: tuple[Path, ...] = field(default_factory=tuple)
    seed: int = 0  # generation seed of the training corpus (the simulator's `train` split replays it)
    episodes: int = 0  # the target robot's training demonstrations


def study_dataset_names(target: str = "sim_arm") -> list[str]:
    """Dataset folder names a prepared study folder holds (what the lin2026 mixtures may name)."""
    other = _OTHER[target]
    return [target, other, "human_hand", "sim_captions", "sim_qa", f"{target}_subtasks", f"{other}_subtasks",
            f"{target}_tokens"]


def _complete(path: Path) -> bool:
    return (path / MANIFEST_NAME).is_file()


def _corpus(raw: Path, converted: Path, cfg: CorpusConfig) -> None:
    """Generate (unless raw/corpus.json exists) and convert (every source without a manifest)."""
    from cotrain.lab.sim.generate import CORPUS_FILE, convert_corpus, generate_corpus, load_corpus

    if not (raw / CORPUS_FILE).is_file():
        log.info("generating the simulated corpus in %s", raw)
        generate_corpus(raw, cfg, overwrite=True)
    corpus = load_corpus(raw)
    _check_same_corpus(raw / CORPUS_FILE, corpus.get("config"), cfg)
    names = [s["name"] for s in corpus["sources"]]
    if not all(_complete(converted / n) for n in names):
        log.info("converting %s into %s", raw, converted)
        convert_corpus(raw, converted, overwrite=True)


def _check_same_corpus(path: Path, stored: Any, cfg: CorpusConfig) -> None:
    """A corpus generated earlier with other settings is not silently reused (and recorded in
    study.json as if it had the new ones); fields added since keep their defaults (the old data)."""
    if not isinstance(stored, dict):
        raise ConfigError(f"{path}: no 'config' object (not a corpus written by `cotrain sim generate`)")
    try:
        old = CorpusConfig(**stored)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"{path}: unreadable corpus config (config.{where}: {first['msg']})") from None
    diff = [name for name in CorpusConfig.model_fields if getattr(old, name) != getattr(cfg, name)]
    if diff:
        name = diff[0]
        raise ConfigError(f"{path}: this corpus was generated with {name}={getattr(old, name)!r}, the study asks "
                          f"for {getattr(cfg, name)!r}; remove {path.parent.parent} to regenerate it, or "
                          f"prepare the study in another folder")


def _tokens(root: Path, target: str, vocab: int) -> None:
    from cotrain.action_tokens import fit_tokenizer
    from cotrain.convert.pipeline import convert
    from cotrain.convert.spec import CONVERTERS, RunOptions

    tok_dir, out = root / "tokenizer", root / f"{target}_tokens"
    if not (tok_dir / "config.json").is_file():
        log.info("fitting a FAST tokenizer on %s", root / target)
        fit_tokenizer([root / target], tok_dir, kind="fast", vocab_size=vocab, overwrite=True)
    if not _complete(out):
        options = CONVERTERS.get("tokens").options(tokenizer=str(tok_dir), name=out.name)  # type: ignore[call-arg]  # registry says ConvertOptions; tokens' adds `tokenizer`
        convert("tokens", root / target, out, options, RunOptions(overwrite=True, progress=False))


def prepare_study_data(root: str | Path, cfg: StudyDataConfig = StudyDataConfig()) -> StudyData:  # noqa: B008  (frozen config)
    """Make every dataset of the study folder that is missing (see module docstring)."""
    root = Path(root)
    if cfg.target not in _OTHER:
        raise ConfigError(f"study target {cfg.target!r}: choose from {', '.join(_OTHER)}")
    train, heldout = cfg.train_corpus(), cfg.heldout_corpus()
    _corpus(root / "raw", root, train)
    _tokens(root, cfg.target, cfg.tokenizer_vocab)
    _corpus(root / "heldout" / "raw", root / "heldout", heldout)
    record = {"config": cfg.model_dump(mode="json"), "train_corpus": train.model_dump(mode="json"),
              "heldout_corpus": heldout.model_dump(mode="json"),
              "heldout": [f"heldout/{n}" for n in (cfg.target, "sim_captions", "sim_qa")]}
    write_text_atomic(root / STUDY_FILE, json.dumps(record, indent=1) + "\n")
    return load_study_data(root)


def load_study_data(root: str | Path) -> StudyData:
    """The facts the runner needs from a study folder's study.json."""
    root = Path(root)
    path = root / STUDY_FILE
    if not path.is_file():
        raise ConfigError(f"{path} not found: not a study folder prepared by `cotrain ablate`")
    record = json.loads(path.read_text())
    cfg = record["config"]
    return StudyData(root, cfg["target"], tuple(cfg["verbs"]), int(cfg["image_size"]),
                     tuple(root / p for p in record["heldout"]), int(cfg["seed"]), int(cfg["episodes"]))
