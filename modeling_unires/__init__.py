"""UniRES: multi-granularity referring expression segmentation as a transformers model."""
