"""Training machinery shared by every task: distributed set-up, seeding, atomic
checkpoints with exact resume, metrics logs, curves and progress bars."""
from .amp import autocast, optimizer_step, resolve_amp
from .checkpointing import TrainingStateError, load_training_state, restore_training_state, save_training_state
from .distributed import DistEnv, init_distributed
from .metrics import MetricsLog, plot_curves, progress
from .seeding import seed_everything, seed_worker

__all__ = [
    "DistEnv",
    "MetricsLog",
    "TrainingStateError",
    "autocast",
    "init_distributed",
    "load_training_state",
    "optimizer_step",
    "plot_curves",
    "progress",
    "resolve_amp",
    "restore_training_state",
    "save_training_state",
    "seed_everything",
    "seed_worker",
]
