"""Small deterministic objectives with learning curves, for demos, tests and benchmarks.

Each ``train(params, ctx)`` mimics a training run: it "trains" for ``epochs`` steps, reports the
loss after each one, and its loss curve converges to the function's value at the params, so
early steps already rank trials and ASHA/Hyperband/median pruning have something real to do.
"""

from __future__ import annotations

import math
import time
from typing import Any

from hpo.trial import TrialContext


def branin_value(x1: float, x2: float) -> float:
    """The Branin function (minimum 0.397887 at three points)."""
    a, b, c = 1.0, 5.1 / (4 * math.pi**2), 5 / math.pi
    r, s, t = 6.0, 10.0, 1 / (8 * math.pi)
    return a * (x2 - b * x1**2 + c * x1 - r) ** 2 + s * (1 - t) * math.cos(x1) + s


def curve(final: float, step: int, epochs: int) -> float:
    """Loss at ``step`` of a run that converges to ``final``: higher early, final at the end."""
    return final + (1.0 + abs(final)) * 2.0 * (1 - step / epochs) ** 2


def branin(params: dict[str, Any], ctx: TrialContext) -> dict[str, float]:
    """Branin over x1 in [-5, 10], x2 in [0, 15], reported as a learning curve."""
    epochs = int(params.get("epochs", 27))
    delay = float(params.get("step_seconds", 0.0))
    final = branin_value(float(params["x1"]), float(params["x2"]))
    loss = final
    for step in range(1, epochs + 1):
        if delay:
            time.sleep(delay)
        loss = curve(final, step, epochs)
        ctx.report({"loss": loss, "epoch": step}, step=step)
    return {"loss": loss}


def quadratic(params: dict[str, Any], ctx: TrialContext) -> dict[str, float]:
    """Sum of squares of every numeric parameter named x*, as a learning curve."""
    epochs = int(params.get("epochs", 9))
    final = sum(float(v) ** 2 for k, v in params.items() if k.startswith("x"))
    loss = final
    for step in range(1, epochs + 1):
        loss = curve(final, step, epochs)
        ctx.report({"loss": loss}, step=step)
    return {"loss": loss}


def noop(params: dict[str, Any], ctx: TrialContext) -> dict[str, float]:
    """Returns at once (measures the loop's own overhead)."""
    return {"loss": float(params.get("x", 0.0)) ** 2}


def sleep(params: dict[str, Any], ctx: TrialContext) -> dict[str, float]:
    """Sleeps ``seconds`` (default 0.1) then returns x**2 (a fixed-cost trainer).

    Records the time spent inside it as the trial attr ``busy_s`` (for utilization figures).
    """
    t0 = time.perf_counter()
    seconds = float(params.get("seconds", 0.1))
    if seconds:
        time.sleep(seconds)
    ctx.set_attrs(busy_s=time.perf_counter() - t0)
    return {"loss": float(params.get("x", 0.0)) ** 2}


def gated(params: dict[str, Any], ctx: TrialContext) -> dict[str, float]:
    """Waits until the file ``params["gate"]`` exists, then returns ``x**2``: lets a test hold
    trials running for as long as it needs (a kill then always lands mid-trial)."""
    import os

    while not os.path.exists(params["gate"]):
        time.sleep(0.02)
    return {"loss": float(params["x"]) ** 2}
