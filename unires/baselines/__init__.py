"""Baselines trained on equal terms with the demo's UniRES (same data, batch shape, optimiser and budget)."""

from .clipseg import CLIPSegTrainingCollator, demo_clipseg_config, run_clipseg_comparison, train_clipseg_baseline

__all__ = ["CLIPSegTrainingCollator", "demo_clipseg_config", "run_clipseg_comparison", "train_clipseg_baseline"]
