"""Program sweeps: users' unmodified scripts run as trials (W&B ``program`` / ``command``).

Real subprocesses running small scripts written into ``tmp_path``. ``run_program`` is tested
directly with a standalone ``TrialContext``; the sweep-level tests go through
``hpo.run_sweep`` (with ``hpo.program.script_trainer`` passed as the objective until
``hpo.trainer_ref.resolve`` returns it for program sweeps).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

import hpo
from hpo.config import parse_config
from hpo.errors import TrainerError, TrialPruned
from hpo.program import ScriptFailed, build_argv, parse_options, run_program, script_trainer
from hpo.program.command import check_command
from hpo.program.wire import parse_stdout_line
from hpo.tracking import TrackingStore
from hpo.trial import TrialContext

EXAMPLE = Path(__file__).resolve().parents[1] / "search_spaces" / "examples" / "wandb_script"


def write(tmp_path: Path, name: str, body: str) -> str:
    (tmp_path / name).write_text(textwrap.dedent(body), encoding="utf-8")
    return name


def run(tmp_path: Path, program: str, params: dict, command: list[str] | None = None, *,
        objective: str = "loss", options: dict | None = None, **ctx_kw):
    ctx = TrialContext(params, objective=objective, **ctx_kw)
    result = run_program({**(options or {}), **params}, ctx, program=program, command=command,
                         cwd=tmp_path)
    return result, ctx


# -- the command line (no subprocess) -------------------------------------------------------------
PARAMS = {"lr": 0.01, "layers": 2, "act": "relu", "warm": True, "cold": False,
          "opt": {"name": "adam", "beta": 0.9}}


def argv(command, params=PARAMS, **kw):
    return build_argv(command, program="train.py", params=params, json_file="/t/p.json",
                      interpreter="/py", **kw)


def test_default_command_is_wandbs():
    env = ["/usr/bin/env"] if os.path.exists("/usr/bin/env") else []
    assert argv(None) == [*env, "/py", "train.py", "--lr=0.01", "--layers=2", "--act=relu",
                          "--warm=True", "--cold=False", '--opt={"name": "adam", "beta": 0.9}']


def test_every_args_macro():
    assert argv(["${args_no_hyphens}"]) == [
        "lr=0.01", "layers=2", "act=relu", "warm=True", "cold=False",
        'opt={"name": "adam", "beta": 0.9}']
    assert argv(["${args_no_boolean_flags}"]) == [
        "--lr=0.01", "--layers=2", "--act=relu", "--warm", '--opt={"name": "adam", "beta": 0.9}']
    assert argv(["${args_no_equals}"], {"lr": 0.5, "n": 3}) == ["--lr", "0.5", "--n", "3"]
    assert json.loads(argv(["${args_json}"])[0]) == PARAMS
    assert argv(["--config=${args_json_file}", "${program}"]) == ["--config=/t/p.json",
                                                                 "train.py"]


def test_nested_dotted_and_envvar():
    assert argv(["${args_no_hyphens}"], nested_args="dotted")[-2:] == ["opt.name=adam",
                                                                       "opt.beta=0.9"]
    assert argv(["${envvar:DATA}/x", "${interpreter}"], environ={"DATA": "/d"}) == ["/d/x", "/py"]
    with pytest.raises(TrainerError, match="DATA"):
        argv(["${envvar:DATA}"], environ={})


def test_bad_commands_are_refused():
    with pytest.raises(TrainerError, match="unknown macro"):
        check_command(["${env}", "${argz}"])
    with pytest.raises(TrainerError, match="element of its own"):
        check_command(["--x ${args}"])
    with pytest.raises(TrainerError, match="kill_grace_s"):
        parse_options({"kill_grace_s": "soon"})
    with pytest.raises(TrainerError, match="nested_args"):
        parse_options({"nested_args": "yaml"})


def test_stdout_line_parsing():
    assert parse_stdout_line('{"loss": 0.5, "step": 3, "tag": "x"}', None) == ({"loss": 0.5}, 3)
    assert parse_stdout_line("epoch 3 done", None) is None
    assert parse_stdout_line('{"loss": 0.5}', "HPO:") is None
    assert parse_stdout_line('HPO: {"loss": 0.5}', "HPO:") == ({"loss": 0.5}, None)
    assert parse_stdout_line('{"name": "config only"}', None) is None


# -- the three ways a script reports --------------------------------------------------------------
def test_hpo_script_api_reports_each_step(tmp_path):
    write(tmp_path, "s.py", """
        import argparse
        from hpo.script_api import params, report_metrics
        p = argparse.ArgumentParser()
        p.add_argument("--lr", type=float)
        args = p.parse_args()
        assert params() == {"lr": args.lr}
        for step in range(1, 4):
            report_metrics({"loss": args.lr * step, "acc": step / 10}, step=step)
        report_metrics({"loss": -1.0})  # no step: the objective's 4th report -> step 4
        """)
    result, ctx = run(tmp_path, "s.py", {"lr": 0.5})
    assert [s for s, _ in ctx.history] == [1, 2, 3, 4]
    assert ctx.history[1][1] == {"loss": 1.0, "acc": 0.2}
    assert result == {"loss": -1.0, "acc": 0.3}


def test_a_script_declares_its_last_step(tmp_path, monkeypatch):
    write(tmp_path, "s.py", """
        import hpo
        hpo.set_max_step(30)
        for epoch in range(1, 3):
            hpo.report({"loss": 1.0 / epoch}, step=epoch)
        """)
    result, ctx = run(tmp_path, "s.py", {})
    assert ctx.max_step == 30 and [s for s, _ in ctx.history] == [1, 2]
    # outside a sweep it does nothing; a bad step says what it wants
    monkeypatch.delenv("HPO_METRICS_FILE", raising=False)
    hpo.set_max_step(5)
    with pytest.raises(ValueError, match="whole number >= 1"):
        hpo.set_max_step(0)
    # a hand-written bad line in the metrics file is ignored, not a crash
    from hpo.program.wire import parse_event
    assert parse_event(b'{"max_step": 12}') == ("max_step", {}, 12)
    assert parse_event(b'{"max_step": 0}') is None and parse_event(b'{"max_step": "x"}') is None


def test_hpo_report_dispatches_a_mapping(tmp_path, monkeypatch):
    probe = tmp_path / "probe.jsonl"
    monkeypatch.setenv("HPO_METRICS_FILE", str(probe))
    hpo.report({"x": 1.0}, step=1)
    assert '"x":1.0' in probe.read_text()
    monkeypatch.delenv("HPO_METRICS_FILE")
    write(tmp_path, "s.py", """
        import hpo
        for epoch in range(3):
            hpo.report({"loss": 1.0 / (epoch + 1)}, step=epoch)
        """)
    result, ctx = run(tmp_path, "s.py", {})
    assert [s for s, _ in ctx.history] == [0, 1, 2]
    assert result == {"loss": pytest.approx(1 / 3)}


def test_stdout_json_lines_and_passthrough(tmp_path, capsys):
    write(tmp_path, "s.py", """
        import json, sys
        print("starting")
        for step in range(3):
            print(json.dumps({"loss": 3 - step, "step": step * 10}))
        print("oops", file=sys.stderr)
        """)
    result, ctx = run(tmp_path, "s.py", {})
    assert ctx.history == [(0, {"loss": 3.0}), (10, {"loss": 2.0}), (20, {"loss": 1.0})]
    assert result == {"loss": 1.0}
    out = capsys.readouterr()
    assert "starting" in out.out and '"loss"' not in out.out and "oops" in out.err


def test_stdout_metrics_prefix(tmp_path):
    write(tmp_path, "s.py", """
        print('{"loss": 99}')            # a config dump, not a metric
        print('HPO: {"loss": 0.25}')
        """)
    result, ctx = run(tmp_path, "s.py", {}, options={"metrics_prefix": "HPO:", "echo": False})
    assert ctx.history == [(1, {"loss": 0.25})]  # no step: the objective's first report
    assert result == {"loss": 0.25}


def test_wandb_script_runs_unchanged(tmp_path):
    write(tmp_path, "s.py", """
        import sys
        import wandb
        assert wandb.HPO_SHIM and wandb.run is None
        with wandb.init(project="p", config={"epochs": 3, "opt": {"momentum": 0.5}}) as run:
            cfg = wandb.config
            assert cfg.lr == cfg["lr"] == run.config.lr == 0.1
            assert cfg.opt.beta == 0.9 and cfg.opt["momentum"] == 0.5   # nested, merged
            cfg.update({"lr": 5.0, "extra": 1}, allow_val_change=True)  # sweep keys locked
            assert cfg.lr == 0.1 and cfg.extra == 1
            for epoch in range(cfg.epochs):
                wandb.log({"train/loss": 1.0, "img": wandb.Image(None)}, commit=False)
                wandb.log({"loss": cfg.lr / (epoch + 1), "nested": {"a": epoch}})
            wandb.log({"acc": 0.5})              # no objective: stays at step 3
            run.summary["loss"] = 0.001          # the final value, as in W&B
        assert wandb.run is None
        print("argv", sys.argv[1:])
        """)
    result, ctx = run(tmp_path, "s.py", {"lr": 0.1, "opt": {"beta": 0.9}}, options={"echo": False})
    assert [s for s, _ in ctx.history] == [1, 2, 3, 3]
    assert ctx.history[0][1] == {"train/loss": 1.0, "loss": 0.1, "nested.a": 0.0}
    assert result["loss"] == 0.001 and result["acc"] == 0.5


def test_wandb_shim_can_be_turned_off(tmp_path):
    write(tmp_path, "s.py", "import wandb\n")
    with pytest.raises(ScriptFailed, match="No module named 'wandb'"):
        run(tmp_path, "s.py", {}, options={"wandb_shim": False, "echo": False})


# -- pruning, failures ----------------------------------------------------------------------------
SLOW = """
    import pathlib, sys, time
    from hpo.script_api import report_metrics
    print("started", flush=True)
    for step in range(1, 200):
        report_metrics({"loss": 1.0 / step}, step=step)
        time.sleep(0.02)
    pathlib.Path("reached_the_end").write_text("yes")
    """


def test_pruning_kills_the_script_midway(tmp_path):
    write(tmp_path, "s.py", SLOW)
    start = time.monotonic()
    with pytest.raises(TrialPruned):
        run(tmp_path, "s.py", {}, prune_after_step=3)
    assert time.monotonic() - start < 3.0
    assert not (tmp_path / "reached_the_end").exists()
    time.sleep(0.3)
    assert not (tmp_path / "reached_the_end").exists()


def test_pruning_sigkills_a_script_that_ignores_sigterm(tmp_path):
    write(tmp_path, "s.py", "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
          + textwrap.dedent(SLOW))
    ctx = TrialContext({}, objective="loss", prune_after_step=2)
    start = time.monotonic()
    with pytest.raises(TrialPruned):
        run_program({"kill_grace_s": 0.3}, ctx, program="s.py", cwd=tmp_path)
    assert time.monotonic() - start < 3.0
    assert ctx.attrs["exit_code"] == -9 and "started" in ctx.attrs["stdout_tail"]
    assert ctx.attrs["pruned_at_step"] == 2
    assert not (tmp_path / "reached_the_end").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_a_dying_worker_takes_its_script_along(how, tmp_path):
    """A worker killed outright (PR_SET_PDEATHSIG) or interrupted (Ctrl-C) leaves no orphan."""
    import signal
    import subprocess

    write(tmp_path, "s.py", """
        import os, pathlib, time
        beat = pathlib.Path("beat")
        for i in range(400):
            beat.write_text(str(i))
            time.sleep(0.02)
        """)
    root = Path(__file__).resolve().parents[1]
    worker = subprocess.Popen([sys.executable, "-c", (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from hpo.trial import TrialContext\n"
        "from hpo.program import run_program\n"
        "run_program({}, TrialContext({}), program='s.py', cwd=sys.argv[2])\n"
    ), str(root), str(tmp_path)], env={**os.environ, "TMPDIR": str(tmp_path)})
    beat = tmp_path / "beat"
    deadline = time.monotonic() + 10
    while not beat.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert beat.exists(), "the script never started"
    worker.send_signal(getattr(signal, how))
    worker.wait(timeout=10)
    time.sleep(0.5)
    last = beat.read_text()
    time.sleep(0.4)
    assert beat.read_text() == last, "the script kept running after its worker died"


def test_nonzero_exit_fails_with_code_and_stderr_tail(tmp_path):
    write(tmp_path, "s.py", """
        import sys
        print("x" * 10000, file=sys.stderr)
        print("the real problem: CUDA out of memory", file=sys.stderr)
        sys.exit(3)
        """)
    ctx = TrialContext({}, objective="loss")
    with pytest.raises(ScriptFailed, match="exit code 3") as err:
        run_program({"echo": False}, ctx, program="s.py", cwd=tmp_path)
    assert "CUDA out of memory" in str(err.value)
    assert ctx.attrs["exit_code"] == 3 and len(ctx.attrs["stderr_tail"]) == 4096
    assert ctx.attrs["stderr_tail"].endswith("CUDA out of memory\n")


def test_missing_objective_fails_naming_it(tmp_path):
    write(tmp_path, "s.py", 'print(\'{"accuracy": 0.9, "step": 1}\')\n')
    with pytest.raises(ScriptFailed, match="'loss'.*reported: accuracy"):
        run(tmp_path, "s.py", {})


def test_timeout(tmp_path):
    write(tmp_path, "s.py", "import time\ntime.sleep(30)\n")
    with pytest.raises(ScriptFailed, match="timeout_s"):
        run(tmp_path, "s.py", {}, options={"timeout_s": 0.5, "kill_grace_s": 0.5})


# -- sweeps ---------------------------------------------------------------------------------------
def sweep(cfg: dict, tmp_path: Path, **overrides):
    """run_sweep on a program sweep (objective passed until resolve() wires script_trainer)."""
    from hpo.trainer_ref import resolve

    config = parse_config(cfg)
    try:
        trainer = resolve(config)
        wired = getattr(trainer, "func", None) is run_program
    except TrainerError:
        wired = False
    objective = None if wired else script_trainer(config)
    return hpo.run_sweep(cfg, objective, storage=f"sqlite:///{tmp_path}/hpo.db", **overrides)


def trials(tmp_path: Path, name: str):
    return {t.number: t for t in TrackingStore(f"sqlite:///{tmp_path}/hpo.db").trials(name)}


CHECK_ARGS = """
    import json, os, sys
    argv = sys.argv[1:]
    mode = os.environ["MODE"]
    if mode == "args":
        assert argv[:2] == ["--fixed", "yes"], argv
        kv = dict(a[2:].split("=", 1) for a in argv[2:])
    elif mode == "args_no_hyphens":
        kv = dict(a.split("=", 1) for a in argv)
    elif mode == "args_no_boolean_flags":
        kv = {a[2:].partition("=")[0]: a.partition("=")[2] or True for a in argv}
    elif mode == "args_json":
        kv = json.loads(argv[0])
    elif mode == "args_json_file":
        assert argv[0] == "--config", argv
        kv = json.load(open(argv[1]))
    elif mode == "envvar":
        assert argv == ["--data=/data/set1"], argv
        kv = {"x": "2", "y": "1"}
    x, y = float(kv["x"]), float(kv["y"])
    shift = 10 if kv.get("shift") in (True, "True") else 0
    print(json.dumps({"loss": (x - 2) ** 2 + y + shift}))
    """

COMMANDS = {
    "args": ["${env}", "${interpreter}", "${program}", "--fixed", "yes", "${args}"],
    "args_no_hyphens": ["${interpreter}", "${program}", "${args_no_hyphens}"],
    "args_no_boolean_flags": ["${env}", "${interpreter}", "${program}",
                              "${args_no_boolean_flags}"],
    "args_json": ["${env}", "${interpreter}", "${program}", "${args_json}"],
    "args_json_file": ["${interpreter}", "${program}", "--config", "${args_json_file}"],
    "envvar": ["${interpreter}", "${program}", "--data=${envvar:DATA_ROOT}/set1"],
}


@pytest.mark.parametrize("mode", list(COMMANDS))
def test_grid_sweep_with_command(mode, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MODE", mode)
    monkeypatch.setenv("DATA_ROOT", "/data")
    write(tmp_path, "train.py", CHECK_ARGS)
    cfg = {
        "name": f"grid-{mode}", "program": "train.py", "command": COMMANDS[mode],
        "method": "grid", "metric": {"name": "loss", "goal": "minimize"},
        "parameters": {"x": {"values": [2, 3]}, "y": {"values": [0, 1]},
                       "shift": {"values": [True, False]}},
        "trainer_args": {"echo": False},
    }
    result = sweep(cfg, tmp_path)
    assert result.counts["complete"] == 8, trials(tmp_path, cfg["name"])
    if mode == "envvar":
        assert result.best_value == 1.0
        return
    assert result.best_value == 0.0
    assert result.best_params == {"x": 2, "y": 0, "shift": False}


def test_nested_parameters_sweep(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "train.py", """
        import argparse, json
        import wandb
        p = argparse.ArgumentParser()
        p.add_argument("--optimizer", type=json.loads)
        p.add_argument("--seed", type=int)
        args = p.parse_args()
        run = wandb.init()
        assert args.optimizer == dict(wandb.config.optimizer)
        lr = wandb.config.optimizer.lr
        wandb.log({"loss": abs(lr - 0.1) + wandb.config.optimizer.wd + args.seed})
        """)
    cfg = {
        "name": "nested", "program": "train.py", "method": "grid",
        "metric": {"name": "loss", "goal": "minimize"},
        "parameters": {
            "optimizer": {"parameters": {"lr": {"values": [0.01, 0.1]},
                                         "wd": {"value": 0.5}}},
            "seed": {"value": 0},
        },
        "trainer_args": {"echo": False},
    }
    result = sweep(cfg, tmp_path)
    assert result.counts["complete"] == 2, trials(tmp_path, "nested")
    assert result.best_params == {"optimizer": {"lr": 0.1, "wd": 0.5}, "seed": 0}
    assert result.best_value == 0.5


def test_failures_are_recorded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "train.py", """
        import argparse, sys
        p = argparse.ArgumentParser()
        p.add_argument("--case")
        case = p.parse_args().case
        if case == "crash":
            print("Traceback: boom", file=sys.stderr)
            sys.exit(7)
        print('{"loss": 1.0}' if case == "ok" else '{"other": 1.0}')
        """)
    cfg = {
        "name": "failures", "program": "train.py", "method": "grid",
        "metric": {"name": "loss", "goal": "minimize"},
        "parameters": {"case": {"values": ["ok", "crash", "silent"]}},
        "trainer_args": {"echo": False},
    }
    result = sweep(cfg, tmp_path)
    assert result.counts["complete"] == 1 and result.counts["failed"] == 2
    by_case = {t.params["case"]: t for t in trials(tmp_path, "failures").values()}
    crash = by_case["crash"]
    assert "exit code 7" in crash.error and "Traceback: boom" in crash.error
    assert crash.attrs["exit_code"] == 7 and "boom" in crash.attrs["stderr_tail"]
    assert "'loss'" in by_case["silent"].error and "other" in by_case["silent"].error


def test_hyperband_prunes_a_script_that_logs_per_epoch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "train.py", """
        import pathlib, time
        import wandb
        wandb.init()
        q = wandb.config.quality
        for epoch in range(9):
            wandb.log({"val_loss": q + 1.0 / (epoch + 1)})   # no step: W&B iterations
            time.sleep(0.05)
        pathlib.Path(f"done-{wandb.run.id}").touch()
        """)
    cfg = {
        "name": "hb", "program": "train.py", "method": "random", "seed": 3,
        "metric": {"name": "val_loss", "goal": "minimize"},
        "parameters": {"quality": {"distribution": "uniform", "min": 0, "max": 10}},
        "early_terminate": {"type": "hyperband", "min_iter": 1, "max_iter": 9, "eta": 3},
        "trainer_args": {"echo": False},
        "budget": {"trials": 12},
    }
    result = sweep(cfg, tmp_path)
    assert result.counts["complete"] + result.counts["pruned"] == 12
    assert result.counts["pruned"] > 0
    recs = trials(tmp_path, "hb")
    killed = 0
    for t in recs.values():
        done = (tmp_path / f"done-hb-{t.number}").exists()
        if t.state == "pruned":  # stopped at a rung: 1, 3 or 9 logged iterations
            assert t.steps in (1, 3, 9) and t.attrs["exit_code"] is not None
            killed += t.steps < 9 and not done and t.attrs["exit_code"] < 0
        else:
            assert t.state == "complete" and t.steps == 9 and done
    assert killed > 0, "no pruned script was stopped before its end"


def test_example_wandb_sweep_runs_unchanged(tmp_path, monkeypatch):
    monkeypatch.chdir(EXAMPLE)
    config = hpo.load_config(EXAMPLE / "sweep.yaml")
    assert config.program == "train.py" and config.method == "bayes"
    cfg = {**config.to_dict(), "name": "wandb-example", "trainer_args": {"echo": False}}
    result = sweep(cfg, tmp_path, trials=6)
    assert result.counts["complete"] + result.counts["pruned"] == 6, trials(tmp_path,
                                                                             "wandb-example")
    assert result.best_value is not None and result.best_value < 1.0


def test_script_runs_in_a_local_worker_process(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "train.py", """
        import os, wandb
        wandb.init()
        wandb.log({"loss": wandb.config.x ** 2, "pid": os.getppid()})
        """)
    cfg = {
        "name": "workers", "program": "train.py", "method": "grid", "parallel": 2,
        "metric": {"name": "loss", "goal": "minimize"},
        "parameters": {"x": {"values": [-1, 0, 1, 2]}},
        "trainer_args": {"echo": False},
    }
    config = parse_config(cfg)
    objective = functools.partial(run_program, program=config.program, command=None)
    from hpo.trainer_ref import resolve

    try:
        wired = getattr(resolve(config), "func", None) is run_program
    except TrainerError:
        wired = False
    result = hpo.run_sweep(cfg, None if wired else objective,
                           storage=f"sqlite:///{tmp_path}/hpo.db")
    assert result.counts["complete"] == 4 and result.best_value == 0.0
    parents = {t.metrics["pid"] for t in trials(tmp_path, "workers").values()}
    assert os.getpid() not in parents and len(parents) >= 1
    assert sys.executable  # the scripts ran on this interpreter (${interpreter})


@pytest.mark.ray
def test_script_runs_in_ray_actors(ray_session, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "train.py", """
        import os, wandb
        wandb.init()
        for epoch in range(3):
            wandb.log({"loss": (wandb.config.x - 1) ** 2 + 1 / (epoch + 1)})
        """)
    cfg = {
        "name": "on-ray", "program": "train.py", "method": "grid", "backend": "ray",
        "parallel": 2, "metric": {"name": "loss", "goal": "minimize"},
        "parameters": {"x": {"values": [0, 1, 2]}},
        "trainer_args": {"echo": False},
    }
    # A Ray actor's working directory is where Ray started, not the sweep's: name it.
    objective = functools.partial(run_program, program="train.py", cwd=str(tmp_path))
    result = hpo.run_sweep(cfg, objective, storage=f"sqlite:///{tmp_path}/hpo.db")
    assert result.counts["complete"] == 3 and result.best_value == pytest.approx(1 / 3)
    recs = trials(tmp_path, "on-ray").values()
    assert all(t.worker.startswith("ray:") and t.steps == 3 for t in recs)
