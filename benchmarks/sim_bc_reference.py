"""How learnable is the simulator benchmark? A plain behaviour-cloning reference, closed loop.

The toy study's `tiny` VLA never succeeds in the simulator (docs/ablation.md). That alone cannot
say whether the benchmark is too hard for a CPU budget or the VLA learns too slowly from scratch.
This script answers it: a plain network, trained by MSE on the same converted demonstrations, is
evaluated closed loop with the same evaluator, on new layouts (`seen`) and on the layouts of its
own demonstrations (`train`), at several points of one training run.

Network (0.54M parameters for the 4-D sim arm): a convolutional stem (three stride-2 convolutions,
so a 64-pixel image becomes an 8 x 8 grid of tokens) with a fixed 2-D sine-cosine position grid;
instruction bytes with learned positions; one state token; one query token. All of them go through
a pre-norm `nn.TransformerEncoder` and the query's output is read as the whole action chunk [H, D].
State and actions are standardised with the training set's mean and SD. Convolutions and fixed
positions are the two things a from-scratch model needs to localise small objects in few steps;
an 8 x 8 patch embedding with learned positions in the same network learns far less (docs/sim.md).

Data: `--data DIR`, a converted target-robot dataset made by `cotrain sim generate ... --convert`,
with `--corpus-seed` and `--verbs` as generated (the `train` split replays those demonstrations);
without `--data` the script generates and converts `--demos` demonstrations itself (pick only by
default, the easy variant; ~4 minutes for 2,048).

    python benchmarks/sim_bc_reference.py --out bc.json           # 2,048 pick demos, 3,000 steps, ~25 min
    python benchmarks/sim_bc_reference.py --data DATA/sim_arm --verbs pick,push,place --steps 6000 --eval-at 3000
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine_info, write_results  # noqa: E402
from cotrain.model.vision_stem import sincos_grid  # noqa: E402  (the tiny-conv preset's grid)

MAX_TEXT_BYTES = 48


@dataclass(frozen=True)
class Demos:
    """Training samples as tensors; state and actions standardised (mean/SD kept for the policy)."""

    images_n3ss: torch.Tensor  # uint8
    state_nd: torch.Tensor
    actions_nhd: torch.Tensor
    valid_nh: torch.Tensor
    text_index_n: torch.Tensor  # row of `texts` per sample
    texts: list[str]
    state_mean: np.ndarray
    state_sd: np.ndarray
    action_mean: np.ndarray
    action_sd: np.ndarray


def load_demos(path: Path) -> Demos:
    """Every sample of a converted robot dataset (first camera), standardised."""
    from cotrain.dataset.sequential import Dataset
    from cotrain.media.image import decode_image

    images, states, actions, valid, texts = [], [], [], [], []
    for sample in Dataset.open(path).iter_decoded():
        camera = next(k for k in sample if k.endswith(".jpg"))
        images.append(decode_image(sample[camera]))
        states.append(sample["state.npy"])
        actions.append(sample["actions.npy"])
        valid.append(sample["actions_valid.npy"])
        texts.append(sample["instruction.txt"])
    state, action, ok = (np.stack(x).astype(np.float32) for x in (states, actions, valid))
    ok = ok.astype(bool)
    s_mean, s_sd = state.mean(0), state.std(0) + 1e-6
    a_mean, a_sd = action[ok].mean(0), action[ok].std(0) + 1e-6
    table = sorted(set(texts))
    row = {t: i for i, t in enumerate(table)}
    return Demos(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
                 torch.from_numpy((state - s_mean) / s_sd), torch.from_numpy((action - a_mean) / a_sd),
                 torch.from_numpy(ok), torch.tensor([row[t] for t in texts]), table, s_mean, s_sd, a_mean, a_sd)


def encode_texts(texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """UTF-8 bytes [N, MAX_TEXT_BYTES] (0-padded) and their validity mask."""
    ids = torch.zeros(len(texts), MAX_TEXT_BYTES, dtype=torch.long)
    ok = torch.zeros(len(texts), MAX_TEXT_BYTES, dtype=torch.bool)
    for i, text in enumerate(texts):
        raw = list(text.encode())[:MAX_TEXT_BYTES]
        ids[i, : len(raw)], ok[i, : len(raw)] = torch.tensor(raw), True
    return ids, ok


class ReferencePolicy(nn.Module):
    """Conv stem + text bytes + state + query through a transformer encoder; query -> chunk [H, D]."""

    def __init__(self, image_size: int, state_dim: int, horizon: int, action_dim: int, width: int = 128,
                 depth: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 5, 2, 2), nn.GELU(), nn.Conv2d(32, 64, 3, 2, 1), nn.GELU(),
                                  nn.Conv2d(64, width, 3, 2, 1))
        self.register_buffer("image_pos", sincos_grid(math.ceil(image_size / 8), width))
        self.byte = nn.Embedding(256, width)
        self.text_pos = nn.Parameter(torch.randn(MAX_TEXT_BYTES, width) * 0.02)
        self.state = nn.Linear(state_dim, width)
        self.query = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, 4, 2 * width, 0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Linear(width, horizon * action_dim)
        self.horizon, self.action_dim = horizon, action_dim

    def forward(self, images_b3ss: torch.Tensor, state_bd: torch.Tensor, ids_bt: torch.Tensor,
                ids_ok_bt: torch.Tensor) -> torch.Tensor:
        b = images_b3ss.shape[0]
        image = self.stem(images_b3ss.float() / 127.5 - 1).flatten(2).transpose(1, 2) + self.image_pos
        tokens = torch.cat([image, self.byte(ids_bt) + self.text_pos, self.state(state_bd)[:, None],
                            self.query.expand(b, 1, -1)], dim=1)
        keep = torch.cat([torch.ones(b, image.shape[1], dtype=torch.bool), ids_ok_bt,
                          torch.ones(b, 2, dtype=torch.bool)], dim=1)
        out = self.encoder(tokens, src_key_padding_mask=~keep)[:, -1]
        return self.head(out).view(b, self.horizon, self.action_dim)


def make_policy(net: ReferencePolicy, demos: Demos) -> Any:
    """obs -> action chunk [H, D] in the robot's units (the evaluator's policy callable)."""
    @torch.no_grad()
    def act(obs: dict[str, Any]) -> np.ndarray:
        image = torch.from_numpy(np.ascontiguousarray(next(iter(obs["images"].values())))).permute(2, 0, 1)[None]
        state = torch.from_numpy(((obs["state"] - demos.state_mean) / demos.state_sd).astype(np.float32))[None]
        ids, ok = encode_texts([obs["instruction"]])
        chunk = net(image, state, ids, ok)[0].numpy()
        return (chunk * demos.action_sd + demos.action_mean).astype(np.float32)

    return act


def closed_loop(net: ReferencePolicy, demos: Demos, args: argparse.Namespace) -> dict[str, Any]:
    """Success, closest approach and tracking on `seen` and on the demos' own layouts (`train`)."""
    from cotrain.lab.sim.evaluate import EvalConfig, evaluate_policy, stateless

    net.eval()
    out = {}
    for split, seed in (("seen", 0), ("train", args.corpus_seed)):
        cfg = EvalConfig(episodes=args.episodes, splits=(split,), seed=seed, verbs=tuple(args.verbs.split(",")),
                         image_size=int(demos.images_n3ss.shape[-1]))
        out[split] = evaluate_policy(stateless(make_policy(net, demos)), cfg, name="bc-reference")["splits"][split]
    net.train()
    return out


def train_and_evaluate(demos: Demos, args: argparse.Namespace) -> tuple[list[dict[str, Any]], int]:
    """One MSE training run; a closed-loop evaluation at every step of `--eval-at`; (curve, parameters)."""
    torch.manual_seed(args.seed)
    n, horizon, dims = demos.actions_nhd.shape
    net = ReferencePolicy(int(demos.images_n3ss.shape[-1]), demos.state_nd.shape[1], horizon, dims)
    opt = torch.optim.AdamW(net.parameters(), args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.steps, pct_start=0.02)
    text_ids, text_ok = encode_texts(demos.texts)
    gen = torch.Generator().manual_seed(args.seed)
    eval_at = {int(s) for s in args.eval_at.split(",")} | {args.steps}
    curve, losses, start = [], [], time.perf_counter()
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, n, (args.batch,), generator=gen)
        rows = demos.text_index_n[idx]
        pred = net(demos.images_n3ss[idx], demos.state_nd[idx], text_ids[rows], text_ok[rows])
        mask = demos.valid_nh[idx][..., None].float()
        loss = (((pred - demos.actions_nhd[idx]) ** 2) * mask).sum() / (mask.sum() * dims)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step in eval_at:
            row = {"step": step, "train_seconds": round(time.perf_counter() - start, 1),
                   "loss_last_100": round(float(np.mean(losses[-100:])), 4), **closed_loop(net, demos, args)}
            print(f"step {step}: seen {row['seen']['successes']}/{row['seen']['episodes']}, "
                  f"train {row['train']['successes']}/{row['train']['episodes']}", flush=True)
            curve.append(row)
    return curve, sum(p.numel() for p in net.parameters())


def generated_data(args: argparse.Namespace, work: Path) -> Path:
    """Generate and convert `--demos` target demonstrations (minimal other sources); the robot dataset."""
    from cotrain.lab.sim.generate import CorpusConfig, convert_corpus, generate_corpus

    cfg = CorpusConfig(episodes=args.demos, other_episodes=1, human_episodes=1, vl_images=4,
                       seed=args.corpus_seed, verbs=tuple(args.verbs.split(",")))
    generate_corpus(work / "raw", cfg)
    convert_corpus(work / "raw", work / "data")
    return work / "data" / cfg.target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="converted target-robot dataset (default: generate one)")
    parser.add_argument("--demos", type=int, default=2048, help="demonstrations to generate without --data")
    parser.add_argument("--verbs", default="pick", help="the corpus's verbs (evaluated tasks)")
    parser.add_argument("--corpus-seed", type=int, default=0, help="the corpus's generation seed")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--eval-at", default="1500", help="extra steps to evaluate at (comma-separated)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--episodes", type=int, default=48, help="closed-loop episodes per split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smoke size: 4 demos, 6 steps, 2 episodes")
    parser.add_argument("--out", default=None, help="result JSON path")
    args = parser.parse_args(argv)
    if args.quick:
        args.demos, args.steps, args.eval_at, args.episodes, args.batch = 4, 6, "3", 2, 8
    torch.set_num_threads(args.threads)
    machine = machine_info()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else generated_data(args, Path(tmp))
        demos = load_demos(data)
        curve, parameters = train_and_evaluate(demos, args)
    settings = {k: getattr(args, k) for k in ("demos", "verbs", "corpus_seed", "steps", "batch", "lr", "episodes",
                                             "seed", "threads")}
    settings.update(data=str(args.data) if args.data else "generated", samples=int(demos.state_nd.shape[0]),
                    parameters=parameters)
    doc = {"size": "quick" if args.quick else "full", "settings": settings, "curve": curve}
    print(f"results: {write_results('sim_bc_reference', doc, machine, args.out)}")


if __name__ == "__main__":
    main()
