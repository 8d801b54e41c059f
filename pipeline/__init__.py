"""Pipeline stages, one module per stage: `python -m pipeline.<stage>` (paths from dvc.yaml)."""
