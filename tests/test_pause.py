"""Pause and resume (hpo.pause): ASHA pauses trials at rungs, promotes them later, and the
resumed trial continues from the paused one's checkpoint."""

from __future__ import annotations

import optuna
import pytest

import hpo
from hpo.checkpoints import Checkpoints
from hpo.errors import ConfigError
from hpo.tracking import TrackingStore

STEPS = 27


# grid order: a good first trial, then mediocre ones that pause at rung 0, then worse ones
# that make the mediocre ones the best third of rung 0, so they are promoted
XS = [0.5, 0.6, 0.7, 0.9, 0.91, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97, 0.98]


def _config(storage: str, **et) -> dict:
    return {
        "name": "pause", "method": "grid", "seed": 5, "storage": storage,
        "metric": {"name": "loss", "goal": "minimize"},
        "parameters": {"x": {"values": XS}},
        "early_terminate": {"type": "asha", "min_iter": 1, "eta": 3, "pause": True, **et},
    }


def _trainer(params, ctx):
    """A learning curve that saves its state before every report and resumes from it."""
    state = ctx.load_checkpoint() or {"step": 0, "trained": []}
    loss = None
    for step in range(state["step"] + 1, STEPS + 1):
        loss = params["x"] + 1.0 / step
        state = {"step": step, "trained": [*state["trained"], step]}
        ctx.save_checkpoint(state, step=step)
        ctx.report({"loss": loss}, step=step)
    return {"loss": loss, "steps_trained": float(len(state["trained"]))}


def test_paused_trials_are_promoted_and_resume_from_their_checkpoint(sqlite_url, tmp_path,
                                                                     monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = hpo.run_sweep(_config(sqlite_url), objective=_trainer)
    store = TrackingStore(sqlite_url)
    trials = {t.number: t for t in store.trials("pause")}
    paused = [t for t in trials.values() if t.state == "paused"]
    resumed = [t for t in trials.values() if "resume_of" in t.attrs]
    assert paused and resumed, result.counts
    fresh = [t for t in trials.values() if "resume_of" not in t.attrs]
    assert len(fresh) == len(XS)  # resumes do not count toward the budget
    study = optuna.load_study(study_name="pause",
                              storage=hpo.study.open_storage(sqlite_url, "pause"))
    by_number = {t.number: t for t in study.trials}
    for t in resumed:
        parent = trials[t.attrs["resume_of"]]
        assert parent.state == "paused" and parent.params == t.params
        # it went on after the paused step: its first report is the step after
        first = min(by_number[t.number].intermediate_values)
        assert first == parent.steps + 1 == t.attrs["resume_step"] + 1
    assert len({t.attrs["resume_of"] for t in resumed}) == len(resumed)  # each resumed once
    assert any(t.steps >= 3 for t in resumed)  # a promoted trial passed the next rung
    done = [t for t in trials.values() if t.state == "complete"]
    # the configuration that reached the end trained each step once across its trials
    for t in done:
        assert t.metrics["steps_trained"] == STEPS
        assert not Checkpoints(tmp_path / "artifacts" / "pause" / f"trial-{t.number}"
                               / "checkpoint").exists()
    # paused trials that were never promoted keep their checkpoint
    waiting = [t for t in paused if t.number not in {r.attrs["resume_of"] for r in resumed}]
    for t in waiting:
        assert Checkpoints(tmp_path / "artifacts" / "pause" / f"trial-{t.number}"
                           / "checkpoint").exists()


def test_pause_needs_asha():
    with pytest.raises(ConfigError, match="pause"):
        hpo.config.parse_config({
            "method": "random", "metric": {"name": "loss"}, "parameters": {"x": {"values": [1]}},
            "early_terminate": {"type": "hyperband", "min_iter": 1, "pause": True}})


def test_checkpoints_keep_the_previous_one_until_the_new_one_is_complete(tmp_path):
    ckpt = Checkpoints(tmp_path / "c")
    assert ckpt.load() is None and ckpt.step() is None
    ckpt.save({"a": 1}, step=3)
    src = tmp_path / "adapter"
    src.mkdir()
    (src / "w.bin").write_bytes(b"123")
    saved = ckpt.save(src, step=9)
    assert ckpt.step() == 9 and (ckpt.load() / "w.bin").read_bytes() == b"123"
    assert saved == ckpt.load()
    assert len(list((tmp_path / "c").glob("ckpt-*"))) == 1  # the older one is gone
    (tmp_path / "c" / "LATEST").write_text("{broken")  # a save cut off before the rename
    assert ckpt.load() is None


SCRIPT = '''
import argparse, json, os, pathlib, time
import hpo

parser = argparse.ArgumentParser()
parser.add_argument("--x", type=float)
x = parser.parse_args().x
state = pathlib.Path(os.environ["HPO_CHECKPOINT_DIR"]) / "state.json"
start = 0
if os.environ.get("HPO_RESUME_DIR"):
    saved = pathlib.Path(os.environ["HPO_RESUME_DIR"]) / "state.json"
    start = json.loads(saved.read_text())["step"]
for step in range(start + 1, 28):
    time.sleep(0.02)
    state.write_text(json.dumps({"step": step}))
    hpo.report({"loss": x + 1.0 / step}, step=step)
'''


def test_a_program_resumes_from_hpo_resume_dir(sqlite_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text(SCRIPT)
    cfg = _config(sqlite_url)
    cfg["program"] = "train.py"
    cfg["parameters"] = {"x": {"values": XS[:8]}}
    hpo.run_sweep(cfg)
    trials = TrackingStore(sqlite_url).trials("pause")
    resumed = [t for t in trials if "resume_of" in t.attrs]
    assert resumed and any(t.state == "paused" for t in trials)
    study = optuna.load_study(study_name="pause",
                              storage=hpo.study.open_storage(sqlite_url, "pause"))
    by_number = {t.number: t for t in study.trials}
    for t in resumed:  # it went on from the saved step, not from step 1
        assert min(by_number[t.number].intermediate_values) > 1


# -- ctx.set_max_step: ASHA's rungs without waiting for a completed trial ----------------------
def _fails_first(declare: bool):
    def train(params, ctx):
        if declare:
            ctx.set_max_step(STEPS)
        loss = None
        for step in range(1, STEPS + 1):
            loss = params["x"] + 1.0 / step
            ctx.report({"loss": loss}, step=step)
        if params["x"] == XS_FAIL[0]:  # the first trial fails: no trial completes before #1
            raise RuntimeError("the first trial fails after its last report")
        return {"loss": loss}
    return train


XS_FAIL = [0.1, 0.9, 0.2]


@pytest.mark.parametrize("declare", [True, False])
def test_set_max_step_lets_asha_prune_before_any_trial_completes(sqlite_url, tmp_path,
                                                                 monkeypatch, declare):
    monkeypatch.chdir(tmp_path)
    cfg = {"name": "maxstep", "method": "grid", "seed": 1, "storage": sqlite_url,
           "metric": {"name": "loss", "goal": "minimize"},
           "parameters": {"x": {"values": XS_FAIL}}, "early_terminate": {"type": "asha"}}
    hpo.run_sweep(cfg, objective=_fails_first(declare))
    trials = {t.params["x"]: t for t in TrackingStore(sqlite_url).trials("maxstep")}
    assert trials[0.1].state == "failed"
    if declare:  # rungs from the declared last step (27 // 3**2 = 3): #1 and #2 are judged at
        # step 3 against #0's value there, and only the best third goes on
        assert [(trials[x].state, trials[x].steps) for x in (0.9, 0.2)] == [("pruned", 3)] * 2
    else:  # no trial completed yet: nothing to set the rungs from, #1 runs to the end
        assert trials[0.9].state == "complete" and trials[0.9].steps == STEPS


def test_set_max_step_refuses_what_is_not_a_step():
    ctx = hpo.TrialContext({"x": 1})
    for bad in (0, -3, 2.5, True, "10"):
        with pytest.raises(hpo.TrainerError, match="set_max_step"):
            ctx.set_max_step(bad)
    ctx.set_max_step(12)
    assert ctx.max_step == 12


def _config_without_min_iter(storage: str, parallel: int) -> dict:
    """Pause under hpo's AshaPruner: rungs from max_iter, a declared or a completed step."""
    cfg = _config(storage)
    del cfg["early_terminate"]["min_iter"]
    cfg["parallel"] = parallel
    return cfg


@pytest.mark.parametrize("parallel", [1, 2])
def test_pause_without_max_iter_resumes_in_every_placement(sqlite_url, tmp_path, monkeypatch,
                                                           parallel):
    """Without max_iter ASHA learns its rungs from the first completed trial. With worker
    processes (parallel 2) only the workers judged trials, so the claiming process never
    learnt the rungs and never resumed a paused trial: it learns them from the study now."""
    monkeypatch.chdir(tmp_path)
    cfg = _config_without_min_iter(sqlite_url, parallel)
    hpo.run_sweep(cfg, objective=_trainer)
    trials = TrackingStore(sqlite_url).trials("pause")
    assert any(t.state == "paused" for t in trials)
    assert any("resume_of" in t.attrs for t in trials)


def _declares_and_never_completes(params, ctx):
    """Declares its last step, then fails before reaching it: no trial ever completes, so
    the rungs can only come from the declaration."""
    ctx.set_max_step(STEPS)
    state = ctx.load_checkpoint() or {"step": 0}
    for step in range(state["step"] + 1, STEPS):
        ctx.save_checkpoint({"step": step}, step=step)
        ctx.report({"loss": params["x"] + 1.0 / step}, step=step)
    raise RuntimeError("fails before its last step")


@pytest.mark.parametrize("parallel", [1, 2])
def test_a_declared_last_step_reaches_the_process_that_resumes(sqlite_url, tmp_path,
                                                               monkeypatch, parallel):
    """ctx.set_max_step used to set the rungs only in the pruner of the trial's own context:
    the claiming process, which promotes paused trials, waited for a completed trial and,
    with none, never resumed one. The declared step is stored on the trial now."""
    monkeypatch.chdir(tmp_path)
    cfg = _config_without_min_iter(sqlite_url, parallel)
    hpo.run_sweep(cfg, objective=_declares_and_never_completes)
    trials = TrackingStore(sqlite_url).trials("pause")
    assert not any(t.state == "complete" for t in trials)
    assert any(t.state == "paused" for t in trials)
    assert any("resume_of" in t.attrs for t in trials)
    study = optuna.load_study(study_name="pause",
                              storage=hpo.study.open_storage(sqlite_url, "pause"))
    assert {t.user_attrs.get("hpo_max_step") for t in study.trials} == {STEPS}


def test_asha_learns_the_declared_last_step_from_the_study():
    from hpo.strategy import MAX_STEP_ATTR, AshaPruner

    study = optuna.create_study()
    trial = study.ask()
    assert AshaPruner().learn(study) is None  # nothing declared, nothing completed
    trial.set_user_attr(MAX_STEP_ATTR, 81)
    inner = AshaPruner(reduction_factor=3, rungs=2).learn(study)
    assert inner is not None and inner._min_resource == 9  # 81 // 3**2


def test_paused_trials_show_in_the_report(sqlite_url, tmp_path, monkeypatch):
    import re

    from hpo.reporting import render_html

    monkeypatch.chdir(tmp_path)
    hpo.run_sweep(_config(sqlite_url), objective=_trainer)
    paused = sum(t.state == "paused" for t in TrackingStore(sqlite_url).trials("pause"))
    assert paused
    html = render_html("pause", sqlite_url)
    assert re.search(rf'class="badge"[^>]*>paused {paused}</span>', html), \
        re.findall(r'class="badge[^"]*"[^>]*>[^<]*</span>', html)


def test_the_declared_last_step_is_stored_only_where_a_pruner_reads_it():
    from hpo.strategy import AshaPruner, BestSoFarPruner, reads_declared_step

    assert reads_declared_step(AshaPruner()) and reads_declared_step(BestSoFarPruner(AshaPruner()))
    assert not reads_declared_step(AshaPruner(max_resource=27))  # max_iter: known everywhere
    assert not reads_declared_step(optuna.pruners.MedianPruner())
    assert not reads_declared_step(optuna.pruners.HyperbandPruner())
