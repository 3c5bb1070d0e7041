"""hpo.config: W&B sweep files in, one clear ConfigError out for every mistake."""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest

from hpo.config import (
    DISTRIBUTIONS,
    EarlyTerminate,
    ParamSpec,
    SweepConfig,
    load_config,
    parse_config,
)
from hpo.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parents[1] / "search_spaces" / "examples" / "wandb"

BASE = """\
program: train.py
method: random
metric:
  name: loss
  goal: minimize
parameters:
  lr:
    min: 0.001
    max: 0.1
"""


def write(tmp_path: Path, text: str, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def cfg(**params: Any) -> dict[str, Any]:
    return {"program": "train.py", "method": "random", "metric": {"name": "loss"},
            "parameters": params}


def param(spec: dict[str, Any]) -> ParamSpec:
    return parse_config(cfg(x=spec)).parameters["x"]


def error(data: Any, **kw: Any) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, **kw)
    return str(info.value)


def file_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    return str(info.value)


# ------------------------------------------------------------------ W&B examples and basics


def test_wandb_example_sweeps_all_parse() -> None:
    files = sorted(EXAMPLES.glob("*.yaml"))
    assert len(files) >= 6
    methods = set()
    for path in files:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            config = load_config(path)
        assert config.program and config.source == str(path) and config.text
        assert parse_config(config.to_dict()).to_dict() == config.to_dict()
        methods.add(config.method)
    assert {"grid", "random", "bayes"} <= methods


def test_load_minimal_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE))
    assert config.method == "random" and config.metric.goal == "minimize"
    assert config.parameters["lr"].distribution == "uniform"
    assert config.text == BASE and config.source.endswith("sweep.yaml")
    assert config.trial_budget() is None and config.parallel == 1 and config.backend == "local"


@pytest.mark.parametrize("dist", sorted(DISTRIBUTIONS))
def test_every_wandb_distribution_parses(dist: str) -> None:
    spec: dict[str, Any] = {"distribution": dist}
    required, _ = DISTRIBUTIONS[dist]
    if "value" in required:
        spec["value"] = 3
    if "values" in required:
        spec["values"] = [1, 2]
    if "min" in required:
        spec.update(min=1, max=4)
    parsed = param(spec)
    assert parsed.distribution == dist
    assert param(parsed.to_dict()) == parsed


def test_wandb_defaults_are_filled() -> None:
    assert (param({"distribution": "q_uniform", "min": 0, "max": 8}).q) == 1
    normal = param({"distribution": "q_normal"})
    assert (normal.mu, normal.sigma, normal.q) == (0, 1, 1)
    beta = param({"distribution": "beta"})
    assert (beta.a, beta.b) == (1, 1)
    assert param({"distribution": "log_normal", "mu": 2}).sigma == 1


@pytest.mark.parametrize(
    ("spec", "dist"),
    [
        ({"values": [1, 2]}, "categorical"),
        ({"values": ["a", "b"], "probabilities": [0.3, 0.7]}, "categorical"),
        ({"value": 3}, "constant"),
        ({"value": None}, "constant"),
        ({"min": 1, "max": 10}, "int_uniform"),
        ({"min": 1.0, "max": 10.0}, "uniform"),
        ({"min": 0, "max": 0.5}, "uniform"),
        ({"mu": 0, "sigma": 2}, "normal"),
        ({"sigma": 2}, "normal"),
        ({"min": "1", "max": "10"}, "int_uniform"),
        ({"min": "1e-5", "max": "1e-1"}, "uniform"),
    ],
)
def test_inference_like_wandb(spec: dict[str, Any], dist: str) -> None:
    assert param(spec).distribution == dist


def test_categorical_w_probabilities_alias() -> None:
    spec = param({"distribution": "categorical_w_probabilities", "values": [1, 2],
                  "probabilities": [0.5, 0.5]})
    assert spec.distribution == "categorical"


def test_nested_parameters() -> None:
    config = parse_config(cfg(
        opt={"parameters": {"lr": {"values": [0.1, 0.01]},
                            "inner": {"parameters": {"beta": {"value": 0.9}}}}},
        bs={"values": [1, 2]}))
    opt = config.parameters["opt"]
    assert opt.parameters is not None and opt.distribution == "nested"
    inner = opt.parameters["inner"].parameters
    assert inner is not None and inner["beta"].distribution == "constant"
    assert config.to_dict()["parameters"]["opt"] == {
        "parameters": {"lr": {"distribution": "categorical", "values": [0.1, 0.01]},
                       "inner": {"parameters": {"beta": {"distribution": "constant",
                                                         "value": 0.9}}}}}


def test_values_stay_as_given() -> None:
    targets = [["q_proj", "v_proj"], ["q_proj", "k_proj", "v_proj", "o_proj"]]
    assert param({"values": targets}).values == targets
    assert param({"values": [{"a": 1}, None, "x"]}).values == [{"a": 1}, None, "x"]


def test_numeric_strings_from_yaml(tmp_path: Path) -> None:
    text = BASE.replace("min: 0.001", "min: 1e-5").replace("max: 0.1", "max: 1E-1") + (
        "  wd:\n    values: [1e-5, 1e-4, 0]\n"
        "  c:\n    value: 3e-4\n"
        "  n:\n    distribution: normal\n    mu: 1e2\n    sigma: '5'\n"
        "trainer_args: {warmup: 1e-3, tag: v1}\n"
        "budget: {trials: '20', minutes: 1e2}\n"
    )
    config = load_config(write(tmp_path, text))
    lr = config.parameters["lr"]
    assert (lr.min, lr.max, lr.distribution) == (1e-5, 0.1, "uniform")
    assert config.parameters["wd"].values == [1e-5, 1e-4, 0]
    assert config.parameters["c"].value == 3e-4
    assert (config.parameters["n"].mu, config.parameters["n"].sigma) == (100.0, 5)
    assert config.trainer_args == {"warmup": 1e-3, "tag": "v1"}
    assert (config.budget.trials, config.budget.minutes) == (20, 100.0)


def test_early_terminate_hyperband_forms() -> None:
    et = parse_config({**cfg(x={"values": [1]}),
                       "early_terminate": {"type": "hyperband", "min_iter": 3}}).early_terminate
    assert et is not None and (et.min_iter, et.eta, et.strict) == (3, 3, True)
    et = parse_config({**cfg(x={"values": [1]}), "early_terminate": {
        "type": "hyperband", "max_iter": 27, "s": 2, "eta": 3, "strict": False}}).early_terminate
    assert et is not None and (et.max_iter, et.s, et.strict) == (27, 2, False)
    assert EarlyTerminate(type="median").n_startup_trials == 5


def test_wandb_only_keys_warn_and_name_names_the_sweep() -> None:
    data = {**cfg(x={"values": [1]}), "entity": "e", "project": "p", "description": "d",
            "controller": {"type": "local"}, "name": "my-sweep"}
    with pytest.warns(UserWarning) as record:
        config = parse_config(data)
    messages = " ".join(str(r.message) for r in record)
    for key in ("entity", "project", "description", "controller"):
        assert repr(key) in messages
    assert config.name == "my-sweep" and "entity" not in config.to_dict()
    with pytest.warns(UserWarning, match="impute"):
        parse_config({**cfg(x={"values": [1]}), "metric": {"name": "m", "impute": "worst"}})


def test_hpo_extensions_and_budget() -> None:
    config = parse_config({
        **cfg(x={"values": [1]}), "method": "tpe", "program": None, "trainer": "lora",
        "trainer_args": {"model": "tiny"}, "resources": {"cpu": 2, "gpu": 0.5},
        "parallel": 4, "backend": "ray", "storage": "sqlite:///x.db", "seed": 7,
        "budget": {"trials": 30, "minutes": 5}, "run_cap": 20, "max_retries": 2,
        "early_terminate": {"type": "asha", "min_resource": 2, "reduction_factor": 4}})
    assert config.trial_budget() == 20 and config.resources.gpu == 0.5
    assert parse_config(config.to_dict()).to_dict() == config.to_dict()


def test_with_overrides() -> None:
    config = parse_config({**cfg(x={"values": [1]}), "budget": {"minutes": 3}},
                          source="s.yaml", text="text")
    new = config.with_overrides(trials=5, parallel=3, backend="ray", storage="sqlite:///a.db",
                                name="n", seed=None, minutes=None)
    assert (new.budget.trials, new.budget.minutes, new.parallel, new.backend) == (5, 3, 3, "ray")
    assert (new.storage, new.name, new.seed, new.source, new.text) == (
        "sqlite:///a.db", "n", None, "s.yaml", "text")
    assert config.parallel == 1  # the original is untouched
    with pytest.raises(ConfigError, match=r"parallel: expected .*1, found 0"):
        config.with_overrides(parallel=0)
    with pytest.raises(ConfigError, match="did you mean 'trials'"):
        config.with_overrides(trails=3)


# ------------------------------------------------------------------ error paths


def test_error_names_file_line_path_expected_found(tmp_path: Path) -> None:
    msg = file_error(tmp_path, BASE.replace("max: 0.1", "max: lots"))
    assert msg.startswith(f"{tmp_path / 'sweep.yaml'}:9: parameters.lr.max: ")
    assert "expected a number" in msg and "found 'lots'" in msg


def test_several_problems_in_one_error(tmp_path: Path) -> None:
    text = BASE.replace("method: random", "method: randm\nparalel: 2").replace(
        "goal: minimize", "goal: minimise")
    msg = file_error(tmp_path, text)
    assert "3 problems" in msg
    assert "sweep.yaml:2: method: expected 'grid', 'random'" in msg and "found 'randm'" in msg
    assert "sweep.yaml:3: paralel:" in msg and "did you mean 'parallel'?" in msg
    assert "sweep.yaml:6: metric.goal:" in msg and "found 'minimise'" in msg


def test_many_duplicate_keys_warn_four_lines(tmp_path: Path) -> None:
    text = BASE + "".join(f"run_cap: {i}\n" for i in range(1, 1001))
    with pytest.warns(UserWarning) as record:
        config = load_config(write(tmp_path, text))
    assert config.run_cap == 1000  # the last one
    messages = [str(w.message) for w in record if "duplicate" in str(w.message)]
    assert len(messages) == 4 and messages[-1].endswith("996 more duplicate keys (the last of "
                                                        "each is used)")


def test_repeated_values_are_kept_once_like_wandb_draws_them() -> None:
    with pytest.warns(UserWarning, match=r"values \[True\] listed more than once"):
        spec = parse_config(cfg(x={"values": [True, False, True, 1]})).parameters["x"]
    assert spec.values == [True, False, 1]  # True and 1 are different choices
    with pytest.warns(UserWarning, match="probabilities are added up"):
        spec = parse_config(cfg(x={"values": ["a", "b", "a"],
                                   "probabilities": [0.25, 0.5, 0.25]})).parameters["x"]
    assert spec.values == ["a", "b"] and spec.probabilities == [0.5, 0.5]


@pytest.mark.parametrize(
    ("spec", "path", "expected", "found"),
    [
        ({"min": 5, "max": 1}, "x.max", "a value greater than min (5)", "1"),
        ({"distribution": "unifrom", "min": 0, "max": 1}, "x.distribution", "one of constant",
         "'unifrom'; did you mean 'uniform'?"),
        ({"distribution": "uniform", "min": 0}, "x.max", "`max:` (required", "nothing"),
        ({"distribution": "uniform", "min": 0, "max": 1, "q": 2}, "x.q",
         "only max, min with distribution uniform", "q: 2"),
        ({"values": [1, 2], "probabilities": [0.5, 0.6]}, "x.probabilities", "sum to 1",
         "[0.5, 0.6]"),
        ({"values": [1, 2], "probabilities": [1.0]}, "x.probabilities", "a list of 2 numbers",
         "[1.0]"),
        ({"values": []}, "x.values", "a non-empty list", "[]"),
        ({"distribution": "int_uniform", "min": 0.5, "max": 3}, "x.min", "an integer", "0.5"),
        ({"distribution": "log_uniform_values", "min": 0, "max": 1}, "x.min", "a value > 0", "0"),
        ({"distribution": "normal", "sigma": -1}, "x.sigma", "a value > 0", "-1"),
        ({"distribution": "q_uniform", "min": 0, "max": 1, "q": 0}, "x.q", "a value > 0", "0"),
        ({"distribution": "beta", "a": "x"}, "x.a", "a number", "'x'"),
        ({"mn": 0, "max": 1}, "x.mn", "one of distribution, value", "unknown key 'mn'"),
        ({"q": 2}, "x.distribution", "`values`, `value`, `min` and `max`", "only q"),
        ({"parameters": {"a": {"value": 1}}, "values": [1]}, "x.values", "only `parameters:`",
         "[1]"),
        ({"parameters": {}}, "x.parameters", "a non-empty mapping", "{}"),
        ("uniform", "x", "a mapping with value", "'uniform'"),
    ],
)
def test_parameter_errors(spec: Any, path: str, expected: str, found: str) -> None:
    msg = error(cfg(x=spec), source="f.yaml")
    assert msg.startswith(f"f.yaml: parameters.{path}: expected ")
    assert expected in msg and f"found {found}" in msg


def test_nested_parameter_error_path(tmp_path: Path) -> None:
    text = BASE + "  opt:\n    parameters:\n      beta:\n        min: 1\n        max: 0\n"
    msg = file_error(tmp_path, text)
    assert "sweep.yaml:14: parameters.opt.parameters.beta.max: expected a value greater" in msg


@pytest.mark.parametrize(
    ("extra", "path", "expected", "found"),
    [
        ({"early_terminate": {"type": "hyperband"}}, "early_terminate.min_iter",
         "`min_iter`, or `max_iter` and `s`", "neither"),
        ({"early_terminate": {"type": "hyperband", "max_iter": 27}}, "early_terminate.min_iter",
         "`min_iter`, or `max_iter` and `s`", "neither"),
        ({"early_terminate": {"type": "hyperband", "min_iter": 3, "eta": 1}},
         "early_terminate.eta", "a number > 1", "1.0"),
        ({"early_terminate": {"type": "hyperband", "min_iter": 0}}, "early_terminate.min_iter",
         "greater than or equal to 1", "0"),
        ({"early_terminate": {"type": "median", "min_iter": 3}}, "early_terminate.min_iter",
         "only interval_steps, n_startup_trials, n_warmup_steps with type median", "min_iter: 3"),
        ({"early_terminate": {"type": "hyperbnd"}}, "early_terminate.type", "'hyperband'",
         "'hyperbnd'"),
        ({"early_terminate": {"type": "asha", "etta": 2}}, "early_terminate.etta",
         "one of type, min_iter", "unknown key 'etta'; did you mean 'eta'?"),
        ({"budget": {"trials": 0}}, "budget.trials", "greater than or equal to 1", "0"),
        ({"run_cap": 0}, "run_cap", "greater than or equal to 1", "0"),
        ({"parallel": 0}, "parallel", "greater than or equal to 1", "0"),
        ({"resources": {"cpu": 0}}, "resources.cpu", "greater than 0", "0"),
        ({"resources": {"gpu": -1}}, "resources.gpu", "greater than or equal to 0", "-1"),
        ({"backend": "k8s"}, "backend", "'local', 'ray' or 'agents'", "'k8s'"),
        ({"trainer": "lora"}, "program", "either `trainer:` or `program:`, not both",
         "trainer: 'lora' and program: 'train.py'"),
        ({"method": "grid", "parameters": {"lr": {"min": 0.1, "max": 1.0}}}, "parameters.lr",
         "finite values for method grid; parameter lr has distribution uniform; use values",
         "'uniform'"),
        ({"metric": {"goal": "maximize"}, "method": "tpe"}, "metric",
         "`metric: {name: ..., goal: minimize|maximize}` (method tpe needs a metric", "no metric"),
        ({"parameters": {}}, "parameters", "at least one parameter", "{}"),
        ({"source": "x"}, "source", "a sweep key (method, metric", "unknown key 'source'"),
        ({"metrc": {}}, "metrc", "a sweep key", "unknown key 'metrc'; did you mean 'metric'?"),
    ],
)
def test_config_errors(extra: dict[str, Any], path: str, expected: str, found: str) -> None:
    msg = error({**cfg(x={"values": [1]}), **extra}, source="f.yaml")
    assert f"f.yaml: {path}: expected " in msg
    assert expected in msg and f"found {found}" in msg


def test_missing_metric_and_parameters() -> None:
    msg = error({"program": "t.py", "method": "random"}, source="f.yaml")
    assert "f.yaml: parameters: expected `parameters:` (required), found nothing" in msg
    assert "metric" not in msg  # W&B: random and grid sweeps need no metric
    msg = error({"program": "t.py", "method": "tpe", "parameters": {"x": {"values": [1, 2]}}},
                source="f.yaml")
    assert "f.yaml: metric: expected `metric: {name: ..., goal: minimize|maximize}`" in msg


def test_grid_error_names_nested_param_line(tmp_path: Path) -> None:
    text = BASE.replace("method: random", "method: grid").replace(
        "  lr:\n    min: 0.001\n    max: 0.1\n",
        "  opt:\n    parameters:\n      lr:\n        distribution: normal\n")
    msg = file_error(tmp_path, text)
    assert "sweep.yaml:9: parameters.opt.parameters.lr: expected finite values" in msg
    assert "parameter opt.lr has distribution normal" in msg


def test_flat_name_collision() -> None:
    msg = error(cfg(**{"opt.lr": {"value": 1}, "opt": {"parameters": {"lr": {"value": 2}}}}))
    assert "parameters.opt.parameters.lr: expected a parameter name distinct" in msg


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing.yaml: sweep file not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    assert file_error(tmp_path, "program: t.py\nmethod: [grid\n").startswith(
        f"{tmp_path / 'sweep.yaml'}:3: YAML syntax error")
    assert "found a list" in file_error(tmp_path, "- a\n- b\n")
    assert "found an empty file" in file_error(tmp_path, "")
    with pytest.warns(UserWarning, match=r"sweep.yaml:10: method: duplicate key \(first on "
                      r"line 2\); this later one is used, as W&B does"):
        assert load_config(write(tmp_path, BASE + "method: bayes\n")).method == "bayes"
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(tmp_path / "bin.yaml")


def test_parse_config_refuses_non_mapping() -> None:
    assert "expected a mapping of sweep keys" in error(["method", "grid"])


def test_no_validation_error_escapes() -> None:
    bad_inputs: list[Any] = [
        {"method": 1, "metric": 2, "parameters": 3},
        {**cfg(x={"values": [1]}), "early_terminate": "hyperband"},
        {**cfg(x={"values": [1]}), "command": "python train.py"},
        {**cfg(x={"values": [1]}), "trainer_args": [1]},
        cfg(x={"values": [object()]}),
        cfg(x={"distribution": ["uniform"], "min": 0, "max": 1}),
        cfg(x={"min": True, "max": 2}),
        cfg(x={"min": float("nan"), "max": 2}),
        cfg(**{"1": {"value": 1}, "y": None}),
    ]
    for data in bad_inputs:
        with pytest.raises(ConfigError):
            parse_config(data)


def test_models_validate_directly() -> None:
    spec = ParamSpec(min=1, max=10)
    assert spec.distribution == "int_uniform"
    config = SweepConfig(method="grid", metric={"name": "m"}, parameters={"x": spec},
                         trainer="lora")
    assert config.parameters["x"] is spec or config.parameters["x"] == spec
