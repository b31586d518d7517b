"""Ablation studies: train every mixture x seed, evaluate, and compare (the Lin et al. 2026 modality study).

Modules: config.py (AblationConfig, StudyDataConfig: the settings), study.py (the mixtures and each
run's mixture file), data.py (the simulated study data: corpus, action tokens, held-out sets),
runner.py (`run_ablation`: resumable training and evaluation), metrics.py (a run's flat metrics),
significance.py (Welch t-tests via scipy, Holm, compact letters), report.py (runs.csv, results.csv,
results.md), plots.py (PNG figures).
Nothing here imports torch at module level.
"""

from cotrain.lab.ablate.config import AblationConfig, StudyDataConfig

__all__ = ["AblationConfig", "StudyDataConfig"]
