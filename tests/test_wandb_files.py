"""W&B sweep files that hpo refused before: no metric (grid/random), a command without a
program, and neither (meant for wandb.agent(sweep_id, function=train))."""

from __future__ import annotations

import sys
import textwrap

import pytest

import hpo
from hpo.config import load_config
from hpo.errors import ConfigError, TrainerError
from hpo.tracking import TrackingStore


def _file(tmp_path, text: str):
    path = tmp_path / "sweep.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_grid_without_metric_records_what_the_script_logs(tmp_path):
    path = _file(tmp_path, f"""
        name: nometric
        method: grid
        storage: sqlite:///{tmp_path}/hpo.db
        parameters:
          lr: {{values: [0.1, 0.01, 0.001]}}
    """)
    config = load_config(path)
    assert config.metric.name is None

    def train(params, ctx):
        ctx.report({"acc": 1 - params["lr"]}, step=1)
        return {"acc": 1 - params["lr"], "loss": params["lr"]}

    result = hpo.run_sweep(config, objective=train)
    assert result.counts["complete"] == 3 and result.best_value is None
    trials = TrackingStore(f"sqlite:///{tmp_path}/hpo.db").trials("nometric")
    assert sorted(t.metrics["acc"] for t in trials) == [0.9, 0.99, 0.999]
    assert all(t.value is None for t in trials)


def test_command_without_program_runs_as_given(tmp_path):
    script = ('import json, sys; args = dict(a.lstrip("-").split("=") for a in sys.argv[1:]); '
              'print(json.dumps({"score": float(args["x"]) * 2}))')
    path = _file(tmp_path, f"""
        name: cmd
        method: random
        storage: sqlite:///{tmp_path}/hpo.db
        run_cap: 2
        command: [{sys.executable!r}, "-c", {script!r}, "${{args}}"]
        parameters:
          x: {{min: 0.0, max: 1.0}}
    """)
    result = hpo.run_sweep(load_config(path))
    assert result.counts["complete"] == 2, result.counts
    for t in TrackingStore(f"sqlite:///{tmp_path}/hpo.db").trials("cmd"):
        assert t.metrics["score"] == pytest.approx(2 * t.params["x"])


def test_file_with_neither_loads_and_runs_with_an_objective(tmp_path):
    path = _file(tmp_path, f"""
        name: fn
        method: random
        metric: {{name: loss}}
        storage: sqlite:///{tmp_path}/hpo.db
        run_cap: 2
        parameters:
          x: {{min: 0.0, max: 1.0}}
    """)
    config = load_config(path)
    with pytest.raises(TrainerError, match="objective=train"):
        hpo.run_sweep(config)
    result = hpo.run_sweep(config, objective=lambda p, ctx: p["x"])
    assert result.counts["complete"] == 2


@pytest.mark.parametrize("extra", ["method: tpe", "method: random\nearly_terminate: {type: asha}"])
def test_no_metric_is_refused_where_one_is_needed(tmp_path, extra):
    path = _file(tmp_path, f"{extra}\nparameters:\n  x: {{min: 0.0, max: 1.0}}\n")
    with pytest.raises(ConfigError, match="metric"):
        load_config(path)
