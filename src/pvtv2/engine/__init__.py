"""Training machinery shared by every task: distributed set-up, seeding, atomic
checkpoints with exact resume, metrics logs, curves and progress bars."""
from .checkpointing import TrainingStateError, load_training_state, save_training_state
from .distributed import DistEnv, init_distributed
from .metrics import MetricsLog, plot_curves, progress
from .seeding import seed_everything, seed_worker

__all__ = [
    "DistEnv",
    "MetricsLog",
    "TrainingStateError",
    "init_distributed",
    "load_training_state",
    "plot_curves",
    "progress",
    "save_training_state",
    "seed_everything",
    "seed_worker",
]
