"""Training checkpoints (``last.pt``): everything needed to resume, written atomically."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import TrainingStateError
from ..fileio import LIBRARY_TAG, atomic_write


def save_training_state(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` via temp file + rename: a crash during the save leaves
    the previous checkpoint intact."""
    state = {"library": LIBRARY_TAG, "kind": "training_state", **state}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_training_state(path: str | Path, *, expect: dict[str, Any]) -> dict[str, Any]:
    """Read a ``last.pt`` and check that ``expect`` (model name, classes, task...) matches."""
    path = Path(path)
    if not path.is_file():
        raise TrainingStateError(f"--resume {path}: no such file; a run writes it as OUTPUT/last.pt")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise TrainingStateError(f"--resume {path}: cannot read it ({str(e).splitlines()[0][:200]}); is it truncated?") from None
    if not isinstance(state, dict) or state.get("kind") != "training_state":
        raise TrainingStateError(f"--resume {path}: not a pvtv2 training checkpoint (last.pt); to start from weights use --pretrained")
    for key, want in expect.items():
        have = state.get("meta", {}).get(key)
        if have != want:
            raise TrainingStateError(
                f"--resume {path}: incompatible with this run: {key} is {have!r} in the checkpoint but {want!r} now"
            )
    return state


def restore_training_state(state: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                           scaler: torch.amp.GradScaler | None = None) -> None:
    """Load the weights, optimiser moments and (when this run uses one) loss-scaler state
    that :func:`save_training_state` wrote."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
