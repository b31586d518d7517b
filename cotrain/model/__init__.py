"""The PaliGemma-style flow-matching VLA: config presets, mixture-of-transformers network, losses, policy.

Modules: config.py (presets), attention.py (mask layout), mot.py (two-stream layers), backbone.py
(transformers networks, local checkpoints), vla.py (the network), flow_matching.py (pure tensor
functions), losses.py (per-sample masked losses), text.py (tokenizer and text layout), inputs.py
(batch -> tensors), factory.py (build, freeze, LoRA), policy.py (inference from a run directory).
"""

from cotrain.model.config import PRESETS, ModelConfig, get_preset

__all__ = ["PRESETS", "ModelConfig", "get_preset"]
