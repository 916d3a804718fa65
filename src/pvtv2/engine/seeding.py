"""Seeding, per epoch, so that a resumed run repeats the uninterrupted one exactly."""
from __future__ import annotations

import random
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, get_worker_info


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    seed = int(seed) % (2**32)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def derive_seed(*parts: int) -> int:
    """A distinct, reproducible 32-bit seed for every tuple of integers."""
    return int(np.random.SeedSequence([int(p) % 2**32 for p in parts]).generate_state(1)[0])


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A distinct, reproducible seed for every (run seed, epoch, rank)."""
    return derive_seed(seed, epoch, rank)


def begin_epoch(seed: int, epoch: int, rank: int = 0, sampler=None) -> None:
    """Seed everything random in ``epoch`` from (run seed, epoch, rank), so that a resumed run
    repeats the uninterrupted one, and tell the distributed ``sampler`` the epoch."""
    seed_everything(epoch_seed(seed, epoch, rank))
    if sampler is not None:
        sampler.set_epoch(epoch)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: torch seeds each worker; pass it on to Python and NumPy
    (timm's augmentations draw from both)."""
    s = torch.initial_seed() % (2**32)
    random.seed(s)
    np.random.seed(s)


def _seed_host(seed: int) -> None:
    """Seed Python, NumPy and torch's CPU generator (not the GPU's: the model's draws stay its own)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)


class SeededSampler(Sampler):
    """``sampler``'s indices, each paired with its own seed from (run seed, epoch, rank, position).

    With :class:`SeededSamples` every sample's augmentation follows from that seed alone: it
    depends neither on the worker that loads it nor on whether the workers persist from one epoch
    to the next (``persistent_workers``), so a resumed run still repeats the uninterrupted one.
    """

    def __init__(self, sampler: Sampler, seed: int, rank: int = 0):
        self.sampler, self.seed, self.rank, self.epoch = sampler, seed, rank, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for position, index in enumerate(self.sampler):
            yield index, derive_seed(self.seed, 3, self.epoch, self.rank, position)


class SeededSamples(Dataset):
    """``dataset`` indexed by ``(index, seed)`` (from :class:`SeededSampler`): Python, NumPy and
    torch are seeded with ``seed`` before the sample is made. In the main process (no loader
    workers) their previous states are put back afterwards, so that the model's own randomness
    (drop path) does not follow the data's."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        if get_worker_info() is not None:
            _seed_host(seed)
            return self.dataset[index]
        states = random.getstate(), np.random.get_state(), torch.get_rng_state()
        try:
            _seed_host(seed)
            return self.dataset[index]
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.set_rng_state(states[2])
