"""Training machinery shared by every task: the run configuration and its checks, the output
folder (lock, config.json, metrics, curves, best/last checkpoints), distributed set-up,
seeding, mixed precision, exact resume and progress bars."""
from .amp import auto_amp, autocast, make_scaler, optimizer_step, resolve_amp
from .backends import BackendSettings, adamw_options, backend_settings, using_backends
from .checkpointing import TrainingStateError, load_training_state, restore_training_state, save_training_state
from .config import RunConfig, check_range, option
from .distributed import DistEnv, check_device_name, init_distributed, is_main_process
from .metrics import MetricsLog, plot_curves, progress
from .run import NonFiniteLossError, RunFolder, check_loss, launch, require_samples
from .seeding import SeededSampler, SeededSamples, begin_epoch, seed_everything, seed_worker
from .steps import FP16_NONFINITE_PATIENCE, LossMeter

__all__ = [
    "BackendSettings",
    "DistEnv",
    "FP16_NONFINITE_PATIENCE",
    "LossMeter",
    "MetricsLog",
    "NonFiniteLossError",
    "RunConfig",
    "RunFolder",
    "SeededSampler",
    "SeededSamples",
    "TrainingStateError",
    "adamw_options",
    "auto_amp",
    "autocast",
    "backend_settings",
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
    "using_backends",
]
