"""Per-epoch metrics (``metrics.jsonl``), loss/accuracy curves and progress bars."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Iterable

from tqdm import tqdm

from ..fileio import atomic_write


def progress(iterable: Iterable, *, desc: str, total: int | None = None, enabled: bool = True) -> tqdm:
    """A tqdm bar that shows only on a terminal (quiet in logs and CI)."""
    return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True,
                disable=not (enabled and sys.stderr.isatty()))


class MetricsLog:
    """``metrics.jsonl``: one JSON object per epoch. Rewritten whole (atomically) on each
    append, so it always agrees with the history stored in ``last.pt``."""

    def __init__(self, path: str | Path, history: list[dict[str, Any]] | None = None):
        self.path = Path(path)
        self.history = list(history or [])

    def append(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        self.flush()

    def flush(self) -> None:
        text = "".join(json.dumps(r) + "\n" for r in self.history)
        atomic_write(self.path, lambda tmp: Path(tmp).write_text(text))


def plot_curves(history: list[dict[str, Any]], path: str | Path, *, loss_keys=("train_loss", "val_loss"),
                score_keys=("val_top1", "val_top5"), score_label: str = "accuracy (%)", x_key: str = "epoch") -> None:
    """Loss and score per epoch (or per ``x_key``), two panels, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for axes, keys, label in ((a, loss_keys, "loss"), (b, score_keys, score_label)):
        for key in keys:  # each series at the records that have it (scores: the evaluated epochs only)
            points = [(r[x_key], r[key]) for r in history if key in r]
            if points:
                axes.plot(*zip(*points), marker="o", label=key)
        axes.set(xlabel=x_key, ylabel=label, title=label)
        if axes.lines:  # nothing evaluated yet: no legend (matplotlib warns on an empty one)
            axes.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
