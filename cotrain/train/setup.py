"""Everything before the first step: device, mixture, model, wrapping, optimizer, loader, run directory.

Fails before any training with a one-line ConfigError on a bad configuration (via compat.py) or on
a run directory that already holds a different run. Resuming restores the model, optimizer, RNG
and loader position from the latest checkpoint; the model is rebuilt from the run's stored
`model_config.json` and `tokenizer.json`, not from the preset, so a resumed run is the same network.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError

from cotrain.dist import DistInfo, init_process_group
from cotrain.errors import ConfigError, CotrainError, DataError
from cotrain.mix.loader import MixtureLoader
from cotrain.mix.resolve import Mixture, load_mixture
from cotrain.model.config import ResolvedModelConfig
from cotrain.model.factory import build_vla, load_tokenizer_for
from cotrain.model.pi_stats import apply_base_stats
from cotrain.model.text import TextLayout, TextTokenizer
from cotrain.model.vla import VLA
from cotrain.train.checkpoint import latest_checkpoint, load_checkpoint, read_json
from cotrain.train.compat import collator_for, norm_stats_record, resolve_model_config, write_json
from cotrain.train.config import RESUMABLE_CHANGES, TrainConfig, flat_fields, nest_fields
from cotrain.train.optim import CosineSchedule, build_optimizer

log = logging.getLogger(__name__)
MAX_TEXT_TOKENS = 1024  # the most the budget grows to on its own (longer texts are cut, and said so)
__all__ = ["Run", "prepare_run"]


@dataclass
class Run:
    """A prepared run: what the loop needs, nothing else."""

    cfg: TrainConfig
    info: DistInfo
    device: torch.device
    amp_dtype: torch.dtype | None
    seed: int
    mixture: Mixture
    model_cfg: ResolvedModelConfig
    layout: TextLayout
    model: VLA
    wrapped: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: CosineSchedule
    loader: MixtureLoader
    run_dir: Path
    start_step: int
    start_seconds: float = 0.0  # training wall time before start_step (from the checkpoint; 0 when fresh)


def _device(cfg: TrainConfig, info: DistInfo) -> tuple[torch.device, torch.dtype | None]:
    cuda = torch.cuda.is_available()
    par = cfg.parallel
    if par.device == "cuda" and not cuda:
        raise ConfigError("--device cuda: no CUDA device is visible")
    device = torch.device(f"cuda:{info.local_rank}") if par.device != "cpu" and cuda else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # CPU bf16 autocast only on request: it pays where the CPU has bf16 matrix units (AMX, AVX512-BF16)
    # and costs elsewhere (benchmarks/sim_step_bench.py measures it); auto keeps CPU runs in fp32.
    amp = torch.bfloat16 if par.precision == "bf16" or (device.type == "cuda" and par.precision == "auto") else None
    return device, amp


def _check_packages(cfg: TrainConfig) -> None:
    import importlib.util

    if cfg.logging.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("TensorBoard logging needs the tensorboard package (pip install tensorboard); "
                          "or pass --set tensorboard=false")
    if cfg.model.lora_rank and importlib.util.find_spec("peft") is None:
        raise ConfigError("--lora-rank needs the peft package (pip install peft)")


def _check_batch(cfg: TrainConfig, mixture: Mixture, info: DistInfo) -> None:
    b = mixture.spec.batch_size
    if b % info.world_size:
        raise ConfigError(f"{mixture.path}: batch_size {b} does not divide over {info.world_size} ranks")
    per_rank = b // info.world_size
    if per_rank % cfg.optim.grad_accum:
        raise ConfigError(f"--grad-accum {cfg.optim.grad_accum} does not divide the per-rank batch of {per_rank} "
                          f"(batch_size {b} / {info.world_size} ranks)")


def _stored_run(cfg: TrainConfig, run_dir: Path) -> Path | None:
    """The checkpoint to resume from, after checking the run directory against `cfg`."""
    stored = run_dir / "train_config.json"
    if not stored.is_file():
        if cfg.resume:
            log.info("no run in %s yet; starting from step 0", run_dir)
        elif run_dir.exists() and any(run_dir.iterdir()):
            raise ConfigError(f"--out {run_dir}: directory exists and is not empty; choose a new --out")
        return None
    if not cfg.resume:
        raise ConfigError(f"--out {run_dir} already holds a run; pass --resume to continue it or choose a new --out")
    try:  # a flat config of an earlier version is compared field by field after moving its keys
        old = flat_fields(nest_fields(read_json(stored)))
    except ValueError as exc:
        raise DataError(stored, f"not a train configuration ({exc})") from None
    new = flat_fields(cfg)
    # a field added after the run was stored had its default's behaviour there
    defaults = flat_fields(TrainConfig.model_construct(mixture=cfg.mixture, steps=cfg.steps, out=cfg.out))
    old.update({k: defaults[k] for k in set(new) - set(old) if k in defaults})
    for key in sorted(set(old) | set(new)):
        if key == "mixture" and _same_file(old.get(key), new.get(key)):
            continue
        if key not in RESUMABLE_CHANGES and old.get(key) != new.get(key):
            raise ConfigError(f"--resume: {key} was {old.get(key)!r} in {stored}, now {new.get(key)!r}; exact "
                              f"resume needs the same configuration")
    return latest_checkpoint(run_dir)


def _same_file(old: Any, new: Any) -> bool:
    """The same mixture file, however it was spelt (relative or absolute path, through a link)."""
    if not isinstance(old, str) or not isinstance(new, str):
        return False
    try:
        return old == new or Path(old).samefile(new)
    except OSError:  # the stored one is gone (or was relative to another working directory)
        return Path(old).resolve() == Path(new).resolve()


def _restore(cfg: TrainConfig, checkpoint: Path, model: VLA, optimizer: torch.optim.Optimizer,
             loader: MixtureLoader, info: DistInfo) -> tuple[int, float]:
    """Load the checkpoint; its step must lie inside this run's schedule. Returns the step and the
    training seconds spent up to it (0 for checkpoints written before cotrain recorded them)."""
    state = load_checkpoint(checkpoint, model, optimizer, info)
    start = int(state["step"])
    if not 0 <= start <= cfg.steps:
        raise DataError(checkpoint / "trainer_state.json", f"step {start} is outside this run's 0..{cfg.steps} "
                                                           f"steps; not resumed")
    seconds = state.get("train_seconds", 0.0)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < math.inf:
        raise DataError(checkpoint / "trainer_state.json", f"'train_seconds' is {seconds!r}; expected a "
                                                           f"non-negative number of seconds")
    file = checkpoint / f"loader_rank{info.rank}.json"
    file = file if file.is_file() else checkpoint / "loader_rank0.json"
    try:
        loader.load_state_dict(state["loader"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataError(file, f"malformed loader state ({exc!r})") from None
    except CotrainError as exc:
        raise DataError(file, str(exc)) from None
    log.info("resumed %s at step %d", checkpoint, start)
    return start, float(seconds)


def _size_text(cfg: TrainConfig, mixture: Mixture, model_cfg: ResolvedModelConfig, tokenizer: TextTokenizer,
               announce: bool) -> ResolvedModelConfig:
    """The text budget from the data: every sample's text length is known from its shard index
    (member sizes; exact with the byte tokenizer, a bound otherwise), so the preset's budget grows to
    the longest text, up to MAX_TEXT_TOKENS. An explicit `max_text_tokens` is kept. Anything still
    cut is said once, with the rate. The budget is part of the stored model config (resume, Policy)."""
    from cotrain.dataset.reader import SourceReader
    from cotrain.model.config import with_overrides
    from cotrain.model.text import TEXT_MEMBERS, text_tokens_bound

    need = []
    for src in mixture.sources:
        sizes = SourceReader(src.url, src.manifest).member_sizes(TEXT_MEMBERS)
        if sizes is None:
            log.info("source %s: remote shards without index sidecars; text lengths are not measured", src.name)
            continue
        need.append(text_tokens_bound(sizes, len(tokenizer.newline)))
    lengths = np.concatenate(need) if need else np.zeros(0, np.int64)
    longest = int(lengths.max()) if len(lengths) else 0
    budget = cfg.model.max_text_tokens or max(model_cfg.max_text_tokens, min(longest, MAX_TEXT_TOKENS))
    cut = int((lengths > budget).sum())
    if cut and announce:  # (every rank sizes the same budget; one says so)
        exact = "" if not model_cfg.pretrained else "up to "
        log.warning("text of %s%d of %d samples (%.1f%%) is longer than max_text_tokens=%d (longest %d tokens): "
                    "their prompts are cut, counted in the `truncated` metric; raise it with --set "
                    "max_text_tokens=%d", exact, cut, len(lengths), 100 * cut / len(lengths), budget, longest, longest)
    if budget != model_cfg.max_text_tokens and announce:
        log.info("text budget: %d tokens (the longest text in the mixture is %d)", budget, longest)
    return with_overrides(model_cfg, max_text_tokens=budget)


def _barrier(info: DistInfo) -> None:
    if info.is_distributed:
        import torch.distributed as dist

        dist.barrier()


def _wrap(model: VLA, cfg: TrainConfig, info: DistInfo, device: torch.device, amp: torch.dtype | None) -> Any:
    if not info.is_distributed:
        if cfg.parallel.fsdp:
            raise ConfigError("--fsdp needs a distributed launch (torchrun --nproc-per-node K -m cotrain train ...)")
        return model
    if cfg.parallel.fsdp:
        from cotrain.train.parallel import apply_fsdp

        return apply_fsdp(model, amp)
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=False)


def _model_and_tokenizer(cfg: TrainConfig, mixture: Mixture, run_dir: Path,
                         resuming: bool, info: DistInfo) -> tuple[ResolvedModelConfig, TextTokenizer]:
    if resuming:
        stored = run_dir / "model_config.json"
        try:
            model_cfg = ResolvedModelConfig.model_validate(read_json(stored))
        except ValidationError as exc:
            err = exc.errors()[0]
            raise DataError(stored, f"not a model configuration (field {'.'.join(map(str, err['loc']))!r}: "
                                    f"{err['msg']})") from None
        return model_cfg, TextTokenizer.load(run_dir / "tokenizer.json")
    model_cfg = resolve_model_config(cfg, mixture)
    tokenizer = load_tokenizer_for(model_cfg, cfg.model.init_from)
    return _size_text(cfg, mixture, model_cfg, tokenizer, info.is_main), tokenizer


def prepare_run(cfg: TrainConfig) -> Run:
    """Set up a run (see module docstring); every rank calls this."""
    _check_packages(cfg)
    info = init_process_group()
    device, amp = _device(cfg, info)
    mixture = apply_base_stats(load_mixture(cfg.mixture), cfg.model.init_from, cfg.model.base_stats)
    _check_batch(cfg, mixture, info)
    run_dir = Path(cfg.out)
    resume_from = _stored_run(cfg, run_dir)
    resuming = (run_dir / "model_config.json").is_file() and cfg.resume
    _barrier(info)  # every rank has looked at the run directory before rank 0 writes into it
    if resuming:
        resolve_model_config(cfg, mixture)  # the mixture must still fit the model
    model_cfg, tokenizer = _model_and_tokenizer(cfg, mixture, run_dir, resuming, info)
    seed = mixture.spec.seed if cfg.seed is None else cfg.seed
    init = cfg.model.init_from if model_cfg.backbone_config is None else None
    model, model_cfg = build_vla(model_cfg, seed=seed, tokenizer=tokenizer, init_from=init)
    model.to(device)
    wrapped = _wrap(model, cfg, info, device, amp)
    opt = cfg.optim
    optimizer = build_optimizer(model.parameters(), lr=opt.lr, betas=opt.betas, eps=opt.eps,
                                weight_decay=opt.weight_decay)
    loader = MixtureLoader(mixture, rank=info.rank, world_size=info.world_size, num_workers=cfg.data.num_workers,
                           end_step=cfg.steps, collator=collator_for(model_cfg))
    if info.is_main and not resuming:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "model_config.json", model_cfg.model_dump(mode="json"))
        base_stats = dict(cfg.model.base_stats)
        write_json(run_dir / "norm_stats.json", {**norm_stats_record(mixture), "base_stats": base_stats})
        tokenizer.save(run_dir)
        write_json(run_dir / "train_config.json", cfg.model_dump(mode="json"))  # last: marks the run as started
    _barrier(info)
    start, seconds = (0, 0.0) if resume_from is None else _restore(cfg, resume_from, model, optimizer, loader, info)
    lm_vocab = int(model_cfg.backbone_config["text_config"]["vocab_size"])  # type: ignore[index]  # build_vla always sets it
    layout = TextLayout(tokenizer, lm_vocab, model_cfg.action_vocab_size, model_cfg.action_token_skip,
                        model_cfg.max_text_tokens, model_cfg.arch == "pi05")
    schedule = CosineSchedule(opt.lr, opt.warmup_steps, cfg.steps, opt.min_lr_ratio)
    return Run(cfg, info, device, amp, seed, mixture, model_cfg, layout, model, wrapped, optimizer, schedule,
               loader, run_dir, start, seconds)
