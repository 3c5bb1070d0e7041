"""Batched reports (hpo.report_buffer): same decisions, nothing lost, writes when due."""

from __future__ import annotations

import time

import optuna
import pytest

import hpo
from hpo.tracking import TrackingStore


def _config(storage: str, name: str, early_terminate: dict | None, trials: int = 12) -> dict:
    cfg = {
        "name": name, "method": "tpe", "seed": 3, "storage": storage,
        "metric": {"name": "loss", "goal": "minimize"},
        "parameters": {"x1": {"min": -5.0, "max": 10.0}, "x2": {"min": 0.0, "max": 15.0}},
        "budget": {"trials": trials},
    }
    if early_terminate:
        cfg["early_terminate"] = early_terminate
    return cfg


def _curve(params, ctx, steps=27):
    from examples.objectives import branin_value, curve

    final = branin_value(params["x1"], params["x2"])
    loss = final
    for step in range(1, steps + 1):
        loss = curve(final, step, steps)
        ctx.report({"loss": loss, "epoch": step}, step=step)
    return {"loss": loss}


def _metrics(store: TrackingStore, name: str, number: int) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for m in store.metrics(name, [number]):
        out.setdefault(m.name, {})[m.step] = m.value
    return out


def _history(storage: str, name: str) -> list[tuple]:
    store = TrackingStore(storage)
    out = []
    for t in sorted(store.trials(name), key=lambda t: t.number):
        steps = sorted(_metrics(store, name, t.number)["loss"]) if t.steps else []
        out.append((t.number, t.state, t.steps, len(steps), round(t.params["x1"], 9)))
    return out


def _pruned_at(storage: str, name: str) -> list[tuple[int, int | None]]:
    study = optuna.load_study(study_name=name, storage=hpo.study.open_storage(storage, name))
    return [(t.number, t.last_step) for t in study.trials
            if t.state == optuna.trial.TrialState.PRUNED]


PRUNERS = {
    "asha": {"type": "asha", "min_iter": 1, "eta": 3},
    "asha_default": {"type": "asha"},
    "hyperband": {"type": "hyperband", "min_iter": 1, "max_iter": 27, "eta": 3},
    "median": {"type": "median", "n_startup_trials": 2, "n_warmup_steps": 2,
               "interval_steps": 3},
}


@pytest.mark.parametrize("kind", sorted(PRUNERS))
def test_batched_reports_make_the_same_decisions(tmp_path, monkeypatch, kind):
    """Same seed, one slot: every report written at once vs batched -> the same trials, the
    same states, pruned at the same steps, the same metric rows. (One database each: the
    sweep name must be the same, Hyperband picks a trial's bracket from it.)"""
    runs = {}
    for flush in ("0", "1"):
        monkeypatch.setenv("HPO_REPORT_FLUSH_S", flush)
        url = f"sqlite:///{tmp_path}/flush{flush}.db"
        result = hpo.run_sweep(_config(url, kind, PRUNERS[kind]), objective=_curve)
        runs[flush] = (_history(url, kind), _pruned_at(url, kind), result.counts)
    assert runs["0"] == runs["1"]
    assert runs["1"][2]["pruned"] > 0  # the pruner did decide something


def test_worker_processes_make_the_same_decisions(tmp_path, monkeypatch):
    """The same through the process backend (a trainer module; one slot, two would race):
    the setting reaches the worker."""
    runs = {}
    for flush in ("0", "1"):
        monkeypatch.setenv("HPO_REPORT_FLUSH_S", flush)
        url = f"sqlite:///{tmp_path}/flush{flush}.db"
        cfg = _config(url, "proc", PRUNERS["asha"], trials=8)
        cfg.update(trainer="examples.objectives:branin", trainer_args={"epochs": 27},
                   parallel=1)
        hpo.run_sweep(cfg)
        runs[flush] = (_history(url, "proc"), _pruned_at(url, "proc"))
    assert runs["0"] == runs["1"] and runs["1"][1]


def test_pruner_is_asked_at_rungs_and_reports_land_with_the_result(sqlite_url, monkeypatch):
    """ASHA rungs 1, 3, 9, 27: the pruner is asked there and nowhere else; with a long flush
    interval nothing is written while the trial runs, and all 30 reports land with its
    result."""
    monkeypatch.setenv("HPO_REPORT_FLUSH_S", "30")
    seen: list[tuple[list[int], int]] = []

    def trainer(params, ctx):
        asked = []
        for step in range(1, 31):
            before = ctx.reports.decisions
            ctx.report({"loss": params["x1"] ** 2 + 1.0 / step, "other": step}, step=step)
            if ctx.reports.decisions > before:
                asked.append(step)
        seen.append((asked, ctx.reports.flushes))
        return {"loss": params["x1"] ** 2}

    cfg = _config(sqlite_url, "rungs", PRUNERS["asha"], trials=1)
    hpo.run_sweep(cfg, objective=trainer)
    assert seen == [([1, 3, 9, 27], 0)]
    store = TrackingStore(sqlite_url)
    metrics = _metrics(store, "rungs", 0)
    assert sorted(metrics["loss"]) == list(range(1, 31)) == sorted(metrics["other"])
    assert store.trials("rungs")[0].steps == 30
    study = optuna.load_study(study_name="rungs",
                              storage=hpo.study.open_storage(sqlite_url, "rungs"))
    assert sorted(study.trials[0].intermediate_values) == list(range(1, 31))


def test_without_a_pruner_reports_wait_at_most_the_flush_interval(sqlite_url, monkeypatch):
    """A trainer that reports and then trains silently: its reports reach the database from
    the background within HPO_REPORT_FLUSH_S, while it still runs (what bounds a kill -9)."""
    monkeypatch.setenv("HPO_REPORT_FLUSH_S", "0.2")
    found = {}

    def trainer(params, ctx):
        for step in range(1, 11):
            ctx.report({"loss": float(step)}, step=step)
        assert ctx.reports.flushes == 0  # nothing was due yet
        watcher = TrackingStore(sqlite_url)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            rows = _metrics(watcher, "silent", ctx.number).get("loss", {})
            if len(rows) == 10:
                found["rows"] = len(rows)
                break
            time.sleep(0.05)
        return {"loss": 0.0}

    cfg = _config(sqlite_url, "silent", None, trials=1)
    cfg["method"] = "random"
    hpo.run_sweep(cfg, objective=trainer)
    assert found == {"rows": 10}


def test_a_step_reported_twice_keeps_optunas_rule(sqlite_url, monkeypatch):
    """The study keeps the first objective value of a step (Optuna's rule, what pruners saw
    unbatched); the metric row keeps the last."""
    monkeypatch.setenv("HPO_REPORT_FLUSH_S", "30")

    def trainer(params, ctx):
        ctx.report({"loss": 5.0}, step=1)
        ctx.report({"loss": 7.0}, step=1)
        ctx.report({"loss": 6.0}, step=2)
        return {"loss": 6.0}

    cfg = _config(sqlite_url, "twice", None, trials=1)
    cfg["method"] = "random"
    hpo.run_sweep(cfg, objective=trainer)
    study = optuna.load_study(study_name="twice",
                              storage=hpo.study.open_storage(sqlite_url, "twice"))
    assert study.trials[0].intermediate_values == {1: 5.0, 2: 6.0}
    assert _metrics(TrackingStore(sqlite_url), "twice", 0)["loss"] == {1: 7.0, 2: 6.0}


def test_bad_flush_setting_is_refused(monkeypatch):
    from hpo.report_buffer import flush_interval

    monkeypatch.setenv("HPO_REPORT_FLUSH_S", "soon")
    with pytest.raises(ValueError, match="HPO_REPORT_FLUSH_S"):
        flush_interval()
    monkeypatch.setenv("HPO_REPORT_FLUSH_S", "-3")
    assert flush_interval() == 0.0
