"""Loading weight files safely: weights_only=True, and a check that the file is a state dict."""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.cli import first_line


class WeightsError(ValueError):
    """A weights file that cannot be used; the message names it."""


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Load a state dict safely (weights_only) and check it is one."""
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle refusals, truncation, not a torch file
        raise WeightsError(f"{path}: not a loadable weights file under weights_only=True "
                           f"({type(exc).__name__}: {first_line(exc)})") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not (isinstance(state, dict) and state
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())):
        raise WeightsError(f"{path}: not a state dict (expected a mapping of parameter names "
                           "to tensors)")
    return state
