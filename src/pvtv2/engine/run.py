"""The output folder of a training run, and the steps every trainer shares around its loop.

:class:`RunFolder` owns the folder: it refuses to write over another run (unless resumed or
``--overwrite``), holds an exclusive lock while the run writes, removes temporaries that a
killed save left behind, and writes ``config.json``, ``metrics.jsonl``, ``curves.png``,
``best.safetensors`` and ``last.pt``. A write that fails (a full disk) stops the run with a
message naming the checkpoint that is still intact; so does a non-finite loss. Under torchrun
only rank 0 touches the folder; the other ranks learn rank 0's verdict and stop with it.

:func:`launch` is a trainer's ``train()``: check the config, set the CUDA backends (TF32,
``--deterministic``: :mod:`pvtv2.engine.backends`), join the process group, open the folder, run
the task's loop, leave the group.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from safetensors import SafetensorError

from ..errors import ConfigError, DataError, PVTv2Error, TrainingError
from ..fileio import atomic_write, prepare_output_folder, remove_stale_temporaries
from .backends import backend_settings, using_backends
from .checkpointing import load_training_state, restore_training_state, save_training_state
from .distributed import DistEnv, cleanup_distributed, init_distributed, resolve_device
from .metrics import MetricsLog, plot_curves

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs are not protected from each other there
    fcntl = None

#: What a run writes; a folder holding any of them holds a run.
RUN_FILES = ("config.json", "metrics.jsonl", "last.pt", "best.safetensors", "curves.png")
LOCK_FILE = ".pvtv2.lock"
HINT_NONFINITE = "Try a lower --lr, or clip gradients with --clip-grad 1.0."

# Lock descriptors this process holds: a forked child (a DataLoader worker) closes its copies,
# so that a worker outliving a killed trainer for a few seconds does not keep the folder locked.
_HELD_LOCKS: set[int] = set()


def _close_inherited_locks() -> None:
    for fd in _HELD_LOCKS:
        with contextlib.suppress(OSError):
            os.close(fd)  # closing a copy leaves the parent's lock in place
    _HELD_LOCKS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_inherited_locks)

# What a failed checkpoint write raises: the OS's error, torch's serialiser's, safetensors'.
_WRITE_ERRORS = (OSError, RuntimeError, SafetensorError)


class NonFiniteLossError(TrainingError):
    """The loss became NaN or infinite."""


def check_loss(value: float, where: str) -> float:
    """``value`` if finite; else :class:`NonFiniteLossError` (``where``: "epoch 3, step 7")."""
    if not math.isfinite(value):
        raise NonFiniteLossError(f"loss is {value} at {where}")
    return value


def require_samples(count: float, skipped: list[str], what: str, *, unit: str = "sample") -> None:
    """Stop a pass that used nothing (every file unreadable, every mask unusable) instead of
    reporting scores of nothing; ``count`` (of ``unit``) is summed over processes."""
    if count <= 0:
        first = f"; first: {skipped[0]}" if skipped else ""
        raise DataError(f"{what}: no usable {unit} ({len(skipped)} file(s) skipped{first}); check that the files are "
                        f"readable images (and masks with labels) in the expected layout")


class RunFolder:
    """The output folder of one run; use as a context manager (``with RunFolder(...) as run``).

    ``unit`` names a training position in messages (``epoch`` or ``iteration``); ``curves``
    holds :func:`~pvtv2.engine.plot_curves` keywords. Every writing method does nothing on
    processes other than rank 0.
    """

    def __init__(self, path: str | os.PathLike, env: DistEnv | None = None, *, resume: str | None = None,
                 overwrite: bool = False, curves: dict[str, Any] | None = None):
        self.path = Path(path)
        self.env = env or DistEnv()
        self.resume, self.overwrite = resume, overwrite
        self.curves = curves or {}
        self.last, self.best = self.path / "last.pt", self.path / "best.safetensors"
        self.metrics = MetricsLog(self.path / "metrics.jsonl")
        self.kept: tuple[Path, str] | None = None  # the training state that is intact, and where it stands
        self._lock_fd: int | None = None
        self._created = False
        self._saved = False  # whether this run wrote a result (metrics line, best or last checkpoint)

    # -- opening and closing -------------------------------------------------------------
    def __enter__(self) -> "RunFolder":
        self.open()
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is not None and not self.resume and not self._saved and self.env.is_main:
            # A new run that stopped before its first result leaves no "run" to refuse next time.
            for name in ("config.json", "metrics.jsonl"):
                with contextlib.suppress(FileNotFoundError):
                    (self.path / name).unlink()
        self.close()

    def open(self) -> None:
        """Create and lock the folder, refuse another run's folder, delete stale temporaries.
        Rank 0 decides; every process raises its error, so none waits for the others forever."""
        error = None
        if self.env.is_main:
            try:
                self._open()
            except PVTv2Error as e:
                error = e
        error = self.env.from_main(error)
        if error is not None:
            raise error

    def _open(self) -> None:
        self._created = not self.path.exists()
        prepare_output_folder(self.path, "--output")
        self._lock()
        try:
            previous = self.previous_run()
            if previous and not self.resume:
                if not self.overwrite:
                    raise ConfigError(
                        f"--output {self.path} already holds a run ({', '.join(previous)}); continue it with "
                        f"--resume, start it over with --overwrite (deletes those files), or choose another --output")
                for name in previous:
                    (self.path / name).unlink()
            removed = remove_stale_temporaries(self.path)
            if removed:
                self.say(f"removed {len(removed)} temporary file(s) left by an interrupted save in {self.path}")
        except BaseException:
            self.close()
            raise

    def previous_run(self) -> list[str]:
        """The files of an earlier run in the folder."""
        return [n for n in RUN_FILES if (self.path / n).is_file()]

    def _lock(self) -> None:
        if fcntl is None:
            return
        lock = self.path / LOCK_FILE
        while True:
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise ConfigError(f"--output {self.path}: cannot write there ({e.strerror}); choose another --output") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise ConfigError(f"--output {self.path} is in use by another training run (pid {holder}); wait for it "
                                  f"to finish or choose another --output") from None
            # The holder before us deletes the file as it leaves: lock the file that is there now.
            with contextlib.suppress(FileNotFoundError):
                if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                    break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        _HELD_LOCKS.add(fd)

    def close(self) -> None:
        """Release the lock (deleting the lock file) and remove the folder if this run created
        it and left nothing in it."""
        if self._lock_fd is None:
            return
        fd, self._lock_fd = self._lock_fd, None
        _HELD_LOCKS.discard(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path / LOCK_FILE)
        os.close(fd)  # releases the lock
        if self._created:
            with contextlib.suppress(OSError):
                self.path.rmdir()  # only succeeds when empty

    # -- what a run writes ---------------------------------------------------------------
    def say(self, message: str) -> None:
        """Print on rank 0 only."""
        if self.env.is_main:
            print(message, flush=True)

    def say_skipped_steps(self, count: int, where: str) -> None:
        """Say that ``count`` steps were skipped by every process (none when 0)."""
        if count:
            self.say(f"{where}: skipped {count} step(s) on every process: a process had no readable image in its "
                     f"batch, or (fp16) GradScaler skipped a non-finite loss")

    def begin(self, config: dict[str, Any], history: list[dict[str, Any]] | None = None, *, amp: str,
              classes: list[str], what: str, images: int, plan: str) -> None:
        """Write ``config.json`` (``config`` with the classes, the number of processes and the
        resolved ``amp``), start ``metrics.jsonl`` from ``history`` (a resumed run's: lines
        written after its checkpoint are dropped), and say what is trained on how many images."""
        self.metrics.history = list(history or [])
        config = {**config, "classes": classes, "world_size": self.env.world_size, "amp_resolved": amp}
        if self.env.is_main:
            self._write(self.path / "config.json",
                        lambda: atomic_write(self.path / "config.json",
                                             lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2))))
            self._write(self.metrics.path, self.metrics.flush)
        self.say(f"training {what} on {images} images, {len(classes)} classes, {self.env.world_size} process(es), "
                 f"{plan} -> {self.path}")

    def restore(self, expect: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                scaler: torch.amp.GradScaler | None = None) -> dict[str, Any] | None:
        """With ``--resume``: read the training state (checked against ``expect``), load the
        weights, optimiser and scaler into the given objects and return the state; else ``None``."""
        if not self.resume:
            return None
        path = self.last if self.resume == "auto" else Path(self.resume)
        state = load_training_state(path, expect=expect)
        restore_training_state(state, model, optimizer, scaler)
        self.kept = (path, state.get("at", "its last save"))
        return state

    def log(self, record: dict[str, Any]) -> None:
        """Append ``record`` to ``metrics.jsonl`` and redraw ``curves.png``."""
        if self.env.is_main:
            self._saved = True
            self._write(self.metrics.path, lambda: self.metrics.append(record))
            self._write(self.path / "curves.png",
                        lambda: plot_curves(self.metrics.history, self.path / "curves.png", **self.curves))

    def save_best(self, write: Callable[[Path], Any]) -> None:
        """``write(path)`` the best model so far to ``best.safetensors``."""
        if self.env.is_main:
            self._saved = True
            self._write(self.best, lambda: write(self.best))

    def save_last(self, state: dict[str, Any], at: str) -> None:
        """Write the training state (``at``: where it stands, e.g. ``epoch 3``) to ``last.pt``."""
        if self.env.is_main:
            self._saved = True
            self._write(self.last, lambda: save_training_state(self.last, {**state, "at": at}))
            self.kept = (self.last, at)

    def intact(self) -> str:
        """A sentence naming the checkpoint a stopped run can continue from."""
        if self.kept is None:
            return "No checkpoint was written yet."
        path, at = self.kept
        return f"The last good checkpoint is {path} ({at}); continue from it with --resume {path}."

    def _write(self, path: Path, write: Callable[[], Any]) -> None:
        try:
            write()
        except _WRITE_ERRORS as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0][:200]
            raise TrainingError(f"could not write {path} ({reason}); training stopped. {self.intact()} "
                                f"Free some disk space (or fix the folder) first.") from e

    @contextlib.contextmanager
    def stopping_on_nonfinite_loss(self) -> Iterator[None]:
        """Turn a :class:`NonFiniteLossError` into a message naming the intact checkpoint."""
        try:
            yield
        except NonFiniteLossError as e:
            raise TrainingError(f"{e}; training stopped. {self.intact()} {HINT_NONFINITE}") from None


def launch(cfg: Any, body: Callable[[Any, DistEnv, RunFolder], dict[str, Any]], *, models,
           curves: dict[str, Any] | None = None) -> dict[str, Any]:
    """A trainer's ``train(cfg)``: resolve and check ``cfg`` (a :class:`~pvtv2.engine.config.RunConfig`,
    ``models``: the known variants), join the process group (torchrun), open the output folder
    and run ``body(cfg, env, run)``, the task's own set-up and loop."""
    cfg = cfg.resolved()
    cfg.validate(models)
    with using_backends(backend_settings(resolve_device(cfg.device), tf32=cfg.tf32, deterministic=cfg.deterministic)):
        env = init_distributed(cfg.device, timeout_minutes=cfg.dist_timeout)
        try:
            with RunFolder(cfg.output, env, resume=cfg.resume, overwrite=cfg.overwrite, curves=curves) as run:
                return body(cfg, env, run)
        finally:
            cleanup_distributed()
