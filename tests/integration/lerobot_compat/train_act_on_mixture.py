"""Train LeRobot's ACT policy on a cotrain mixture with LeRobot's own processors, optimizer and step.

Runs in a LeRobot environment (LeRobot 0.4.4). cotrain need not be installed there: pass its
checkout with --cotrain-root (the mixture loader and the batch adapter import only numpy, torch,
pydantic and PyYAML, which LeRobot already has). Prints one JSON line per `--log-every` steps and
writes {"losses": [...], "l1_losses": [...]} to --out.

    python train_act_on_mixture.py MIXTURE.yaml --steps 300 --out losses.json --cotrain-root /path/to/cotrain
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mixture", type=Path)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cotrain-root", type=Path, default=None, help="A cotrain checkout, if not installed.")
    parser.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (ACT's preset: 1e-5).")
    parser.add_argument("--log-every", type=int, default=50)
    args = parser.parse_args()
    if args.cotrain_root is not None:
        sys.path.insert(0, str(args.cotrain_root.resolve()))

    import torch
    from lerobot.configs.types import FeatureType, NormalizationMode, PolicyFeature
    from lerobot.policies.act.configuration_act import ACTConfig
    from lerobot.policies.act.modeling_act import ACTPolicy
    from lerobot.policies.factory import make_pre_post_processors

    from cotrain.interop.lerobot_batch import LeRobotBatchAdapter
    from cotrain.mix.loader import MixtureLoader
    from cotrain.mix.resolve import load_mixture

    torch.manual_seed(0)
    loader = MixtureLoader(load_mixture(args.mixture), end_step=args.steps)
    adapter = LeRobotBatchAdapter.for_loader(loader)
    features = {k: PolicyFeature(type=FeatureType[f.kind], shape=f.shape) for k, f in adapter.features().items()}
    config = ACTConfig(
        input_features={k: f for k, f in features.items() if f.type is not FeatureType.ACTION},
        output_features={k: f for k, f in features.items() if f.type is FeatureType.ACTION},
        normalization_mapping={k: NormalizationMode(v) for k, v in adapter.normalization_mapping().items()},
        chunk_size=adapter.horizon, n_action_steps=adapter.horizon,
        # A small ACT whose ResNet18 starts from random weights: nothing is downloaded.
        pretrained_backbone_weights=None, dim_model=64, n_heads=4, dim_feedforward=256,
        n_encoder_layers=2, n_decoder_layers=1, n_vae_encoder_layers=1, latent_dim=8, device="cpu",
        optimizer_lr=args.lr, optimizer_lr_backbone=args.lr,
    )
    policy = ACTPolicy(config)
    stats = {k: {s: torch.from_numpy(v) for s, v in st.items()} for k, st in adapter.image_stats().items()}
    preprocessor, _ = make_pre_post_processors(config, dataset_stats=stats)
    optimizer = config.get_optimizer_preset().build(policy.get_optim_params())
    grad_clip = config.get_optimizer_preset().grad_clip_norm

    losses, l1 = [], []
    policy.train()
    for batch in loader:
        loss, parts = policy.forward(preprocessor(adapter(batch)))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), grad_clip)
        optimizer.step()
        losses.append(loss.item())
        l1.append(float(parts["l1_loss"]))
        if len(losses) % args.log_every == 0:
            n = args.log_every
            report = {"step": len(losses), "loss": sum(losses[-n:]) / n, "l1_loss": sum(l1[-n:]) / n}
            print(json.dumps(report), flush=True)
    args.out.write_text(json.dumps({"losses": losses, "l1_losses": l1}))


if __name__ == "__main__":
    main()
