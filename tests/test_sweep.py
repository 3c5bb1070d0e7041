"""The coordinator loop end to end on the local backend, over SQLite and PostgreSQL."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

import hpo
from hpo.errors import ConfigError, TrainerError
from hpo.tracking import TrackingStore


def branin_config(storage: str, **extra) -> dict:
    cfg = {
        "name": "branin",
        "method": "tpe",
        "metric": {"name": "loss", "goal": "minimize"},
        "parameters": {
            "x1": {"distribution": "uniform", "min": -5, "max": 10},
            "x2": {"distribution": "uniform", "min": 0, "max": 15},
        },
        "trainer": "examples.objectives:branin",
        "trainer_args": {"epochs": 9},
        "early_terminate": {"type": "asha", "min_iter": 1, "eta": 3},
        "seed": 1,
        "storage": storage,
        "budget": {"trials": 30},
    }
    cfg.update(extra)
    return cfg


def test_branin_sweep_prunes_and_records(storage_url):
    result = hpo.run_sweep(branin_config(storage_url))
    c = result.counts
    assert c["complete"] + c["pruned"] == 30
    assert c["pruned"] > 0, "ASHA pruned nothing"
    assert c["failed"] == 0 and c["running"] == 0
    assert result.best_value is not None and result.best_value < 5.0
    store = TrackingStore(storage_url)
    trials = store.trials("branin")
    assert len(trials) == 30
    best = store.best("branin")
    assert best.number == result.best_number and best.steps == 9
    pruned = [t for t in trials if t.state == "pruned"]
    assert all(t.steps is not None and t.steps < 9 for t in pruned)
    metrics = store.metrics("branin", numbers=[best.number])
    assert {m.name for m in metrics} == {"loss", "epoch"}
    assert sorted({m.step for m in metrics}) == list(range(1, 10))


def test_parallel_workers_are_processes(storage_url, tmp_path):
    """Two worker processes each run trials. Each worker's first trial waits until the other
    worker has started one too (on a loaded machine one worker could otherwise run all 12
    before the second is up)."""
    seen = tmp_path / "pids"
    seen.mkdir()

    def trainer(params, ctx):
        import time as _time

        (seen / str(os.getpid())).touch()
        deadline = _time.monotonic() + 60
        while len(list(seen.iterdir())) < 2 and _time.monotonic() < deadline:
            _time.sleep(0.02)
        from examples.objectives import branin

        return branin({**params, "epochs": 9}, ctx)

    cfg = branin_config(storage_url, parallel=2, budget={"trials": 12}, method="random")
    del cfg["trainer"]
    result = hpo.run_sweep(cfg, objective=trainer)
    assert sum(result.counts[k] for k in ("complete", "pruned")) == 12
    trials = TrackingStore(storage_url).trials("branin")
    pids = {t.pid for t in trials}
    assert len(pids) == 2 and os.getpid() not in pids
    assert all(t.worker.startswith("local:") for t in trials)


def test_grid_runs_each_point_once_with_two_workers(storage_url):
    cfg = {
        "name": "grid",
        "method": "grid",
        "metric": {"name": "loss"},
        "parameters": {"x": {"values": [1, 2, 3]}, "y": {"values": ["a", "b"]},
                       "epochs": {"value": 2}},
        "trainer": "examples.objectives:quadratic",
        "parallel": 2,
        "storage": storage_url,
        "budget": {"trials": 50},
    }
    result = hpo.run_sweep(cfg)
    trials = TrackingStore(storage_url).trials("grid")
    points = sorted((t.params["x"], t.params["y"]) for t in trials)
    assert points == sorted((x, y) for x in (1, 2, 3) for y in ("a", "b"))
    assert result.counts["complete"] == 6
    # resuming a finished grid runs nothing more
    again = hpo.run_sweep(cfg)
    assert again.trials_run == 0 and again.counts["complete"] == 6


def _flaky(params, ctx):
    if params["x"] > 0.5:
        raise ValueError("x too large for this toy")
    return {"loss": params["x"]}


def _nan(params, ctx):
    return {"loss": float("nan")}


def _wrong_metric(params, ctx):
    return {"accuracy": 1.0}


def small_config(storage: str, name: str, **extra) -> dict:
    cfg = {
        "name": name,
        "method": "random",
        "metric": {"name": "loss"},
        "parameters": {"x": {"min": 0.0, "max": 1.0}},
        "trainer": "examples.objectives:noop",
        "storage": storage,
        "seed": 3,
        "budget": {"trials": 8},
    }
    cfg.update(extra)
    return cfg


def test_raising_trainer_fails_trial_and_sweep_goes_on(sqlite_url):
    result = hpo.run_sweep(small_config(sqlite_url, "flaky"), objective=_flaky)
    trials = TrackingStore(sqlite_url).trials("flaky")
    failed = [t for t in trials if t.state == "failed"]
    assert failed and len(trials) == 8
    assert all("ValueError: x too large" in t.error and "Traceback" in t.error for t in failed)
    assert result.counts["complete"] == 8 - len(failed)
    assert result.best_value <= 0.5


def test_nan_and_missing_metric_fail_with_reason(sqlite_url):
    hpo.run_sweep(small_config(sqlite_url, "nan", budget={"trials": 2}), objective=_nan)
    hpo.run_sweep(small_config(sqlite_url, "nometric", budget={"trials": 2}),
                  objective=_wrong_metric)
    store = TrackingStore(sqlite_url)
    assert all("not finite" in t.error for t in store.trials("nan"))
    assert all(t.state == "failed" and "'loss' was never reported" in t.error
               for t in store.trials("nometric"))


def test_closure_objective_runs_in_worker_processes(sqlite_url):
    offset = 0.25  # captured by the closure, which is cloudpickled to the workers

    def objective(params, ctx):
        return (params["x"] - offset) ** 2

    result = hpo.run_sweep(small_config(sqlite_url, "closure", parallel=2), objective=objective)
    assert result.counts["complete"] == 8
    assert math.isclose(result.best_value, (result.best_params["x"] - offset) ** 2)


def test_crashed_worker_is_failed_and_retried(sqlite_url, tmp_path):
    marker = tmp_path / "crashed"

    def crash_once(params, ctx):
        if not marker.exists():
            marker.write_text("x")
            os._exit(3)  # the whole worker process dies mid-trial
        return {"loss": params["x"]}

    result = hpo.run_sweep(
        small_config(sqlite_url, "crash", parallel=2, budget={"trials": 6}), objective=crash_once
    )
    trials = TrackingStore(sqlite_url).trials("crash")
    failed = [t for t in trials if t.state == "failed"]
    assert len(failed) == 1
    assert "worker lost" in failed[0].error and "exit code 3" in failed[0].error
    retry = [t for t in trials if t.retry_of == failed[0].number]
    assert len(retry) == 1 and retry[0].params == failed[0].params
    assert retry[0].state == "complete"
    assert result.counts["complete"] == 6  # the budget is still met


def test_target_stops_the_sweep(sqlite_url):
    cfg = small_config(sqlite_url, "target", metric={"name": "loss", "target": 0.5},
                       budget={"trials": 50})
    result = hpo.run_sweep(cfg)
    assert result.best_value <= 0.5
    assert result.counts["complete"] < 50


def test_resume_with_another_space_is_refused(sqlite_url):
    hpo.run_sweep(small_config(sqlite_url, "same", budget={"trials": 2}))
    changed = small_config(sqlite_url, "same", parameters={"x": {"min": 0.0, "max": 2.0}})
    with pytest.raises(ConfigError, match="different parameters"):
        hpo.run_sweep(changed)
    more = hpo.run_sweep(small_config(sqlite_url, "same", budget={"trials": 5}))
    assert more.counts["complete"] == 5 and more.trials_run == 3


def test_unknown_trainer_refused_before_anything_runs(sqlite_url):
    with pytest.raises(TrainerError, match="cannot import module"):
        hpo.run_sweep(small_config(sqlite_url, "bad", trainer="nope.module:fn"))
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists() or \
        "bad" not in [s.name for s in TrackingStore(sqlite_url).list_sweeps()]


def test_storage_outage_inside_a_trainer_does_not_fail_the_trial(sqlite_url, monkeypatch):
    """The database going away while the trainer reports (a PostgreSQL restart) is ridden
    out: the report is retried, the trial completes, nothing is lost or doubled."""
    from hpo.errors import StorageUnavailable

    real_log, real_attrs = TrackingStore.log_metrics_batch, TrackingStore.set_trial_attrs
    failures = {"log": 2, "attrs": 1}

    def flaky(kind, real):
        def call(self, *args, **kwargs):
            if failures[kind] > 0:
                failures[kind] -= 1
                raise StorageUnavailable("Tracking storage: cannot connect: refused.")
            return real(self, *args, **kwargs)
        return call

    monkeypatch.setattr(TrackingStore, "log_metrics_batch", flaky("log", real_log))
    monkeypatch.setattr(TrackingStore, "set_trial_attrs", flaky("attrs", real_attrs))

    def trainer(params, ctx):
        for step in (1, 2):
            ctx.report({"loss": params["x"] + step}, step=step)
        ctx.set_attrs(note="done")
        return {"loss": params["x"]}

    cfg = {"name": "outage", "method": "random", "metric": {"name": "loss"},
           "parameters": {"x": {"min": 0.0, "max": 1.0}}, "storage": sqlite_url,
           "budget": {"trials": 2}, "seed": 0}
    result = hpo.run_sweep(cfg, objective=trainer)
    assert result.counts["complete"] == 2 and result.counts["failed"] == 0
    assert failures == {"log": 0, "attrs": 0}  # the outage did happen
    store = TrackingStore(sqlite_url)
    assert all(t.attrs.get("note") == "done" and t.steps == 2 for t in store.trials("outage"))
    assert len(store.metrics("outage")) == 4  # 2 trials x 2 steps, no step lost or doubled
