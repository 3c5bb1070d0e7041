"""hpo: self-hosted, distributed hyperparameter optimization.

Python API::

    import hpo
    result = hpo.run_sweep("search_spaces/examples/quadratic.yaml", trials=30)
    print(result.best_value, result.best_params)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hpo.errors import (
    BackendError,
    ConfigError,
    HpoError,
    StorageError,
    StudyNotFound,
    TrainerError,
    TrialPruned,
)
from hpo.trial import TrialContext

__version__ = "0.1.0"

if TYPE_CHECKING:
    from hpo.config import SweepConfig
    from hpo.sweep import SweepResult


def load_config(path: Any) -> SweepConfig:
    """Load and validate a sweep YAML file (W&B sweep files work as they are)."""
    from hpo.config import load_config as _load

    return _load(path)


def run_sweep(config_or_path: Any, objective: Any = None, **overrides: Any) -> SweepResult:
    """Run or resume a sweep; see :func:`hpo.sweep.run_sweep`."""
    from hpo.sweep import run_sweep as _run

    return _run(config_or_path, objective, **overrides)


def report(name: Any, storage: str | None = None, path: Any = None, *, step: Any = None) -> Any:
    """Two uses, told apart by the first argument:

    - ``hpo.report("sweep-name", storage=..., path=...)`` writes the sweep's self-contained
      HTML report and returns its path;
    - ``hpo.report({"eval_loss": 0.3}, step=100)`` inside a training script run by a sweep
      (``program:``) reports metrics to that trial (a no-op with a warning outside a sweep).
    """
    if isinstance(name, Mapping):
        from hpo.script_api import report_metrics

        return report_metrics(name, step)
    from hpo.reporting import build_report

    return build_report(name, storage=storage, path=path)


def set_max_step(step: int) -> None:
    """Inside a training script run by a sweep (``program:``): the step of the last report
    (see :func:`hpo.script_api.set_max_step`); an objective function calls
    ``ctx.set_max_step`` instead."""
    from hpo.script_api import set_max_step as _set

    _set(step)


__all__ = [
    "BackendError",
    "ConfigError",
    "HpoError",
    "StorageError",
    "StudyNotFound",
    "TrainerError",
    "TrialContext",
    "TrialPruned",
    "load_config",
    "report",
    "run_sweep",
    "set_max_step",
]
