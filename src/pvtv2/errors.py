"""The user-facing error types. The CLI turns each of these into a one-line message;
any other exception is a bug and keeps its traceback.

They subclass the built-in types callers caught before (``ValueError``/``RuntimeError``),
so ``except ValueError`` around a load keeps working.
"""
from __future__ import annotations


class PVTv2Error(Exception):
    """Base of every error the package reports to users as a one-line message."""


class CheckpointError(PVTv2Error, ValueError):
    """A checkpoint could not be read or does not fit the model."""


class DataError(PVTv2Error, ValueError):
    """A data folder or file is missing, empty or inconsistent."""


class TrainingError(PVTv2Error, RuntimeError):
    """Training stopped (non-finite loss...); the message says which checkpoint is intact."""


class TrainingStateError(PVTv2Error, ValueError):
    """A resume file that is missing, unreadable or does not fit this run."""


class ExportError(PVTv2Error, RuntimeError):
    """Export failed or its result did not match PyTorch."""


class ConfigError(PVTv2Error, ValueError):
    """A setting (command-line flag or config field) out of its valid range."""
