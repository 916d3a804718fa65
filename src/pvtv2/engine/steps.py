"""The training loss between log steps, kept on the device, and the non-finite-loss decision.

Reading a loss (``loss.item()``) makes the host wait for the GPU: once per step that empties the
GPU's queue every step. :class:`LossMeter` sums the losses on the device and reads them every
``--log-every`` steps (and before every evaluation or save), when it also decides, with every
other process, whether the run must stop:

* fp32 and bf16: any non-finite loss since the last read stops the run (its update has already
  spoilt the weights, which are then never saved);
* fp16 with GradScaler: a non-finite loss makes GradScaler skip that update and lower its scale,
  which is how fp16 training finds its scale: such steps are counted, and only more than
  :data:`FP16_NONFINITE_PATIENCE` of them in a row stop the run.
"""
from __future__ import annotations

from typing import Callable

import torch

from .distributed import DistEnv
from .run import NonFiniteLossError

#: Under fp16, how many non-finite losses in a row GradScaler may skip before the run stops.
FP16_NONFINITE_PATIENCE = 10


class LossMeter:
    """Sums of ``loss * weight`` over the steps with a finite loss, and the non-finite ones.

    ``patience``: non-finite losses in a row that are tolerated (0, or
    :data:`FP16_NONFINITE_PATIENCE` when a GradScaler skips them).
    """

    def __init__(self, env: DistEnv, *, patience: int = 0):
        self.env, self.patience = env, patience
        zero = torch.zeros((), dtype=torch.float32, device=env.device)  # float32: MPS has no float64
        self._streak = zero.clone()  # non-finite losses in a row, carried over reads
        self._zero = zero
        self._reset()

    def _reset(self) -> None:
        z = self._zero
        self._sum, self._weight, self._bad, self._worst = z.clone(), z.clone(), z.clone(), self._streak.clone()
        self._bad_step, self._bad_value = z.clone() - 1, z.clone()
        self._parts: dict[str, torch.Tensor] = {}

    def update(self, loss: torch.Tensor, step: int, *, weight: float = 1.0,
               parts: dict[str, torch.Tensor] | None = None) -> None:
        """Add step ``step``'s ``loss`` (a 0-dim tensor) with ``weight`` (e.g. its images) and its
        named ``parts`` (a detector's loss terms, summed unweighted); nothing waits for the GPU."""
        loss = loss.detach().float()
        ok = torch.isfinite(loss)
        self._sum += torch.where(ok, loss, 0.0) * weight
        self._weight += ok * weight
        self._bad += ~ok
        self._streak = torch.where(ok, 0.0, self._streak + 1)
        self._worst = torch.maximum(self._worst, self._streak)
        first = ~ok & (self._bad_step < 0)
        self._bad_step = torch.where(first, float(step), self._bad_step)
        self._bad_value = torch.where(first, loss, self._bad_value)
        for name, value in (parts or {}).items():
            part = torch.where(ok, value.detach().float(), 0.0)
            self._parts[name] = self._parts[name] + part if name in self._parts else part

    def read(self, where: Callable[[int], str], step: int) -> dict[str, float]:
        """This process's sums since the last read: ``loss`` (sum of finite ``loss * weight``),
        ``weight``, ``nonfinite`` (steps) and the parts; the host waits for the GPU here.

        Every process must call it at the same step: all of them stop together, with a
        :class:`~pvtv2.engine.NonFiniteLossError` naming the step (``where(step)``), when any one
        had a non-finite loss beyond ``patience``."""
        names = sorted(self._parts)
        values = torch.stack([self._sum, self._weight, self._bad, self._worst, self._bad_step, self._bad_value,
                              *(self._parts[n] for n in names)]).tolist()
        total, weight, bad, worst, bad_step, bad_value, *parts = values
        stop = worst > self.patience
        anyone = self.env.all_reduce_sum([float(stop)])[0] > 0 if self.env.distributed else stop
        if anyone:
            if not stop:
                raise NonFiniteLossError(f"loss is not finite on another process by {where(step)}")
            streak = f" and in {int(worst)} steps in a row (GradScaler skipped their updates)" if self.patience else ""
            raise NonFiniteLossError(f"loss is {bad_value} at {where(int(bad_step))}{streak}")
        self._reset()
        return {"loss": total, "weight": weight, "nonfinite": bad, **dict(zip(names, parts))}
