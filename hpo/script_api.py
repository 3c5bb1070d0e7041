"""Report metrics from a training *script* that hpo runs (a ``program:`` sweep).

hpo runs a program sweep's script as a subprocess (see ``hpo.program``); the script
reports intermediate metrics and hpo's pruner decides, in the parent, whether to stop it::

    import hpo
    for epoch in range(epochs):
        ...
        hpo.report({"eval_loss": loss}, step=epoch)   # -> hpo.script_api.report_metrics

The parent gives every trial a metrics file (``$HPO_METRICS_FILE``) and a JSON file with the
trial's parameters (``$HPO_PARAMS_FILE``). :func:`report_metrics` appends one JSON line per
call to the metrics file; the parent follows the file and feeds each line to
``TrialContext.report``. Outside a sweep (the variable is unset) it does nothing and warns once,
so the same script still runs on its own.

Wire format (shared with the ``wandb`` shim in ``hpo/wandb_shim``, which writes it directly so
that it does not have to import hpo): one JSON object per line, either
``{"metrics": {"name": number, ...}, "step": int | null}`` or ``{"summary": {"name": number}}``
(a final value that overrides the last logged one, like ``wandb.run.summary[...] = x``). A null
step means "count for me": the parent uses the number of times the objective metric has been
reported so far (W&B's iteration count, which is what ``hyperband``'s ``min_iter`` counts).

This module imports nothing from hpo at import time beyond the standard library.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from typing import Any

from hpo.program.wire import METRICS_FILE_ENV, PARAMS_FILE_ENV, encode_event  # noqa: E402

_warned = False
_fd: tuple[str, int] | None = None  # (path, O_APPEND fd), opened once per process


def in_sweep() -> bool:
    """True when this process is a trial script started by hpo."""
    return bool(os.environ.get(METRICS_FILE_ENV))


def params() -> dict[str, Any]:
    """The trial's parameters (nested dicts for nested parameters); ``{}`` outside a sweep."""
    path = os.environ.get(PARAMS_FILE_ENV)
    if not path:
        return {}
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    return data if isinstance(data, dict) else {}


def _as_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    if not isinstance(metrics, Mapping):
        raise TypeError(
            f"hpo.report() takes a dict of metric name -> number, got {type(metrics).__name__}"
        )
    out: dict[str, float] = {}
    for key, value in metrics.items():
        try:
            out[str(key)] = float(value)
        except (TypeError, ValueError):
            raise TypeError(
                f"hpo.report(): metric {key!r} must be a number, got {value!r}"
            ) from None
    return out


def _as_step(step: Any) -> int | None:
    if step is None:
        return None
    if isinstance(step, bool):
        raise TypeError(f"hpo.report(step=...) must be an int or None, got {step!r}")
    try:
        as_int = int(step)
    except (TypeError, ValueError):
        raise TypeError(f"hpo.report(step=...) must be an int or None, got {step!r}") from None
    if as_int != step:
        raise TypeError(f"hpo.report(step=...) must be a whole number, got {step!r}")
    return as_int


def _write(event: dict[str, Any]) -> None:
    """Append one JSON line to the metrics file (one write() on an O_APPEND fd: lines from
    several processes of one script do not interleave)."""
    global _fd
    path = os.environ[METRICS_FILE_ENV]
    if _fd is None or _fd[0] != path:
        _fd = (path, os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))
    os.write(_fd[1], encode_event(event))


def report_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Report ``metrics`` (name -> number) at ``step`` to the hpo sweep running this script.

    ``step=None`` counts iterations: the step becomes the number of times the sweep's
    objective metric has been reported (W&B semantics). The call never blocks on the pruner:
    when the pruner says stop, hpo terminates the script (SIGTERM, then SIGKILL after
    ``trainer_args.kill_grace_s``). Outside a sweep this is a no-op that warns once.
    """
    global _warned
    values = _as_metrics(metrics)
    as_step = _as_step(step)
    if not in_sweep():
        if not _warned:
            _warned = True
            warnings.warn(
                "hpo.report(): not running under an hpo sweep ($HPO_METRICS_FILE is unset); "
                "metrics are not recorded",
                RuntimeWarning,
                stacklevel=2,
            )
        return
    _write({"metrics": values, "step": as_step})


def report_summary(metrics: Mapping[str, float]) -> None:
    """Set final values (they override the last reported ones in the trial's result)."""
    values = _as_metrics(metrics)
    if in_sweep():
        _write({"summary": values})


def set_max_step(step: int) -> None:
    """Tell the sweep the step this script's last report will have (epochs, say): ASHA
    without ``early_terminate.max_iter`` then prunes from the first trials instead of waiting
    for one to complete. A no-op outside a sweep."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ValueError(f"hpo.set_max_step() takes a whole number >= 1, got {step!r}")
    if in_sweep():
        _write({"max_step": step})


__all__ = [
    "METRICS_FILE_ENV",
    "PARAMS_FILE_ENV",
    "in_sweep",
    "set_max_step",
    "params",
    "report_metrics",
    "report_summary",
]
