"""kill -9 at each crash point of a transition, injected at the exact point (no timing).

A child process runs a sweep in-process and calls ``os._exit(9)`` at one point while it
handles trial 2; the test then resumes the same sweep and checks: the budget holds exactly,
nothing finished before the crash is lost, no trial is left running, and the study and the
tracking rows agree trial by trial.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import hpo
from tests.contracts.agreement import check_agreement, counted

REPO = Path(__file__).resolve().parents[2]

# point -> code that patches hpo so the process dies there (trial 2 only)
POINTS = {
    "inside-claim-after-ask": """
        from hpo.space import SearchSpace
        real = SearchSpace.suggest
        def suggest(self, trial):
            out = real(self, trial)
            if trial.number == 2:
                os._exit(9)
            return out
        SearchSpace.suggest = suggest
    """,
    "after-claim-commit": """
        from hpo.lifecycle import Transitions
        real = Transitions.claim
        def claim(self, *a, **k):
            job = real(self, *a, **k)
            if getattr(job, "number", None) == 2:
                os._exit(9)
            return job
        Transitions.claim = claim
    """,
    "after-start": """
        from hpo.lifecycle import Transitions
        real = Transitions.start
        def start(self, job, *a, **k):
            ok = real(self, job, *a, **k)
            if job.number == 2:
                os._exit(9)
            return ok
        Transitions.start = start
    """,
    "after-tell-before-row": """
        from hpo.tracking import TrackingStore
        real = TrackingStore.end_trial
        def end_trial(self, sweep, number, *a, **k):
            if number == 2 and self.in_transaction:
                os._exit(9)
            return real(self, sweep, number, *a, **k)
        TrackingStore.end_trial = end_trial
    """,
    "after-finish-commit": """
        from hpo.lifecycle import Transitions
        real = Transitions.finish
        def finish(self, job, *a, **k):
            kept = real(self, job, *a, **k)
            if job.number == 2:
                os._exit(9)
            return kept
        Transitions.finish = finish
    """,
}


def objective(params, ctx):
    ctx.report({"loss": params["x"] ** 2 + 1.0}, step=1)
    return {"loss": params["x"] ** 2}


def config(url: str) -> dict:
    return {"name": "crash", "method": "random", "seed": 1, "metric": {"name": "loss"},
            "parameters": {"x": {"min": -1.0, "max": 1.0}}, "storage": url,
            "budget": {"trials": 5}, "max_retries": 1}


@pytest.mark.parametrize("point", list(POINTS))
def test_kill_at_crash_point_then_resume(point, storage_url):
    script = "import os\n" + textwrap.dedent(POINTS[point]) + textwrap.dedent(f"""
        import hpo
        from tests.contracts.test_crash_points import config, objective
        hpo.run_sweep(config({storage_url!r}), objective=objective)
        raise SystemExit("the fault point was never reached")
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr[-3000:]
    from hpo.tracking import TrackingStore

    before = {t.number: t for t in TrackingStore(storage_url).trials("crash")
              if t.state == "complete"}
    assert set(before) >= {0, 1}
    result = hpo.run_sweep(config(storage_url), objective=objective)
    counts = check_agreement(storage_url, "crash")
    assert counted(storage_url, "crash") == 5, counts
    assert counts["complete"] == 5, counts
    after = {t.number: t for t in TrackingStore(storage_url).trials("crash")}
    for number, rec in before.items():  # nothing finished was lost or changed
        assert after[number].state == "complete" and after[number].value == rec.value
    if point == "inside-claim-after-ask":  # rolled back: trial 2 never existed before
        assert after[2].state == "complete" and after[2].retry_of is None
        assert len(after) == 5
    elif point == "after-finish-commit":
        assert after[2].state == "complete"
    else:  # trial 2 was cut off: handed back (interrupted) or failed and retried
        assert after[2].state in ("interrupted", "failed"), after[2]
        assert [t.retry_of for t in after.values()].count(2) == 1
    assert result.counts == counts
