"""cotrain: co-training data mixtures for robot learning.

The package root stays light (no torch, no codecs at import) so that `cotrain --help` is fast; the
heavy pieces are imported by the modules that use them.
"""

from cotrain.errors import ConfigError, CotrainError, DataError

__version__ = "0.1.0"

__all__ = ["ConfigError", "CotrainError", "DataError", "Policy", "__version__"]


def __getattr__(name: str) -> object:
    # `cotrain.Policy` without importing torch at `import cotrain` (the CLI must start fast).
    if name == "Policy":
        from cotrain.eval.policy import Policy

        return Policy
    raise AttributeError(f"module 'cotrain' has no attribute {name!r}")
