"""Errors a user can cause. Every message says what to fix."""

from __future__ import annotations

import optuna


class HpoError(Exception):
    """Base class of every error hpo raises for bad input or a bad environment."""


class ConfigError(HpoError):
    """A sweep file or config dict is invalid; raised before anything runs."""


class StorageError(HpoError):
    """The storage URL is wrong, unreachable, or holds an incompatible schema."""


class StudyNotFound(HpoError):
    """A named sweep/study does not exist in the storage."""


class TrainerError(HpoError):
    """A trainer reference cannot be resolved, or a trainer got arguments it cannot use."""


class BackendError(HpoError):
    """A backend (local processes, Ray) cannot start or lost contact."""


class TrialPruned(optuna.TrialPruned):
    """Raised by ``TrialContext.report`` when the pruner says stop. Let it propagate."""


class TrialPaused(TrialPruned):
    """Raised by ``TrialContext.report`` when a pausing ASHA stops the trial at a rung: save a
    checkpoint before reporting (``ctx.save_checkpoint``) and the trial can be resumed."""


class StorageUnavailable(StorageError):
    """The database cannot be reached right now (down, restarting, connection lost, a
    deadlock or lock timeout): retrying later can succeed. Other ``StorageError``s are real
    errors (a constraint violated, a wrong schema) and are reported at once."""
