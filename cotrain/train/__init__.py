"""Training: `train(TrainConfig) -> TrainResult` with checkpoints, metrics, DDP and FSDP2.

Modules: config.py (TrainConfig), compat.py (preset vs mixture checks), setup.py (building a run),
loop.py (the loop), checkpoint.py (atomic safetensors checkpoints), optim.py (AdamW + schedule),
metrics.py (JSONL fanned out to TensorBoard and W&B), wandb_log.py (the W&B sink), validation.py
(held-out evaluation every N steps), bad_samples.py (per-source bad-sample counts), parallel.py (FSDP2 wrapping).
"""

from cotrain.train.config import TrainConfig, make_train_config

__all__ = ["TrainConfig", "make_train_config"]
