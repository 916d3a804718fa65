"""Training machinery shared by every task: the run configuration and its checks, the output
folder (lock, config.json, metrics, curves, best/last checkpoints), distributed set-up,
seeding, mixed precision, exact resume and progress bars."""
from .amp import autocast, make_scaler, optimizer_step, resolve_amp
from .checkpointing import TrainingStateError, load_training_state, restore_training_state, save_training_state
from .config import RunConfig, check_range, option
from .distributed import DistEnv, check_device_name, init_distributed, is_main_process
from .metrics import MetricsLog, plot_curves, progress
from .run import NonFiniteLossError, RunFolder, check_loss, launch, require_samples
from .seeding import begin_epoch, seed_everything, seed_worker

__all__ = [
    "DistEnv",
    "MetricsLog",
    "NonFiniteLossError",
    "RunConfig",
    "RunFolder",
    "TrainingStateError",
    "autocast",
    "begin_epoch",
    "check_device_name",
    "check_loss",
    "check_range",
    "init_distributed",
    "is_main_process",
    "launch",
    "load_training_state",
    "make_scaler",
    "option",
    "optimizer_step",
    "plot_curves",
    "progress",
    "require_samples",
    "resolve_amp",
    "restore_training_state",
    "save_training_state",
    "seed_everything",
    "seed_worker",
]
