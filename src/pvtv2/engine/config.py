"""What every training recipe shares: the run options (data, model, output folder, resume,
device...), the ``option`` field helper whose metadata feeds both ``--help`` and the range
checks, and the checks themselves.

Each task's ``recipe.py`` subclasses :class:`RunConfig` and adds its own recipe fields; the
CLI builds one flag per field, and :meth:`RunConfig.validate` refuses out-of-range values with
a one-line :class:`~pvtv2.errors.ConfigError` naming the flag and its valid range.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Iterable

from ..errors import ConfigError
from .distributed import check_device_name

def option(default: Any, help: str, *, min: float | None = None, max: float | None = None,
           below: float | None = None, **kw: Any) -> Any:
    """A dataclass field with its ``--help`` text and valid range: ``min <= value``,
    ``value <= max``, ``value < below``. Extra keywords (``choices``, ``nargs``) go to argparse."""
    limits = {k: v for k, v in (("min", min), ("max", max), ("below", below)) if v is not None}
    return field(default=default, metadata={"help": help, **kw, **limits})


def flag(name: str) -> str:
    """The command-line flag of a config field: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def _range_text(lo: float | None, hi: float | None, below: float | None) -> str:
    if lo is not None and below is not None:
        return f"in [{lo:g}, {below:g})"
    if lo is not None and hi is not None:
        return f"in [{lo:g}, {hi:g}]"
    if lo is not None:
        return f"at least {lo:g}"
    if below is not None:
        return f"below {below:g}"
    return f"at most {hi:g}"


def check_range(name: str, value: Any, *, min: float | None = None, max: float | None = None,
                below: float | None = None) -> Any:
    """``value`` (a number, or a tuple of numbers) if it lies in the range, else a
    :class:`ConfigError` naming ``name`` (a flag) and the range. ``None`` passes (a default
    that is filled later)."""
    if value is None:
        return value
    for v in value if isinstance(value, (tuple, list)) else (value,):
        bad = (isinstance(v, float) and not math.isfinite(v)) or (min is not None and v < min) \
            or (max is not None and v > max) or (below is not None and v >= below)
        if bad:
            shown = " ".join(map(str, value)) if isinstance(value, (tuple, list)) else value
            raise ConfigError(f"{name} {shown}: must be {_range_text(min, max, below)}")
    return value


@dataclass
class RunConfig:
    """The options every training command has; a task's recipe adds its own fields after these."""

    data: str = option("", "dataset root")
    model: str = option("pvt_v2_b2", "variant (pvtv2.list_models())")
    pretrained: str | None = option(None, "initial weights: a file, folder, hub id, or 'true' for the published ImageNet weights")
    output: str = option("runs/train", "output folder (config.json, metrics.jsonl, last.pt, best.safetensors, curves.png)")
    overwrite: bool = option(False, "start over in an output folder that already holds a run (its run files are deleted first)")
    resume: str | None = option(None, "resume from this last.pt ('auto': OUTPUT/last.pt)")
    seed: int = option(0, "random seed")
    workers: int = option(4, "data-loading worker processes per training process", min=0)
    device: str = option("auto", "cpu, cuda, cuda:N, mps, or auto (CUDA when available)")
    amp: str = option("auto", "autocast precision: auto (bf16 on CUDA where the GPU has it, else fp16; none on CPU), "
                              "bf16, fp16, none", choices=("auto", "none", "bf16", "fp16"))
    tf32: bool = option(True, "CUDA: fp32 matrix products and convolutions on TF32 tensor cores (--no-tf32: full fp32)")
    deterministic: bool = option(False, "deterministic algorithms (CUDA: cuBLAS workspace, no cuDNN autotuning; ops without "
                                        "a deterministic kernel warn)")
    log_every: int = option(20, "steps between loss reads (progress bar, non-finite check): each read waits for the GPU",
                            min=1)
    dist_timeout: float = option(30.0, "torchrun: minutes a process waits for the others in a collective before it "
                                       "stops with an error", min=1)
    progress: bool = option(True, "tqdm progress bars on a terminal")

    def resolved(self):
        """A copy with the defaults that depend on other fields filled in."""
        return replace(self)

    def validate(self, models: Iterable[str]) -> None:
        """Refuse, with a :class:`ConfigError`, an unknown ``model`` (not in ``models``), an
        unknown device, a resume/overwrite contradiction, or any field outside the range its
        :func:`option` declares."""
        models = list(models)
        if self.model not in models:
            raise ConfigError(f"--model {self.model}: unknown model; known models: {', '.join(models)}")
        check_device_name(self.device)
        if self.resume and self.overwrite:
            raise ConfigError("--resume continues the run in the output folder and --overwrite deletes it: give one of them")
        for f in fields(self):
            limits = {k: f.metadata[k] for k in ("min", "max", "below") if k in f.metadata}
            if limits:
                check_range(flag(f.name), getattr(self, f.name), **limits)
            if "choices" in f.metadata and getattr(self, f.name) not in f.metadata["choices"]:
                raise ConfigError(f"{flag(f.name)} {getattr(self, f.name)}: must be one of {', '.join(map(str, f.metadata['choices']))}")

    @property
    def pretrained_weights(self) -> Any:
        """``pretrained`` as :func:`pvtv2.create_model` takes it: ``True`` for 'true' (the
        published weights), ``None`` when unset, else the file, folder or hub id."""
        if self.pretrained is None or str(self.pretrained).lower() in ("", "none", "false"):
            return None
        return True if str(self.pretrained).lower() == "true" else self.pretrained

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples as lists), as written to ``config.json`` and ``last.pt``."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
