"""hpo.space: every W&B distribution, sampled through real Optuna, follows its declared law."""

from __future__ import annotations

import itertools
import math
import statistics
from collections import Counter
from typing import Any

import optuna
import pytest

from hpo.config import parse_config
from hpo.errors import ConfigError
from hpo.space import SearchSpace

N = 4000

PARAMS: dict[str, dict[str, Any]] = {
    "constant": {"value": 2.5},
    "cat": {"values": ["a", "b", "c"]},
    "weighted": {"values": ["x", "y", "z", "never"], "probabilities": [0.2, 0.5, 0.3, 0.0]},
    "lists": {"values": [["q_proj", "v_proj"], ["q_proj", "k_proj", "v_proj"]]},
    "int_uniform": {"min": 0, "max": 10},
    "uniform": {"distribution": "uniform", "min": -1, "max": 3},
    "q_uniform": {"distribution": "q_uniform", "min": 0, "max": 256},
    "q_uniform_float": {"distribution": "q_uniform", "min": 0, "max": 1, "q": 0.25},
    "q_uniform_offgrid": {"distribution": "q_uniform", "min": 0.3, "max": 2.3},
    "log_uniform": {"distribution": "log_uniform", "min": -4, "max": 0},
    "log_uniform_values": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1},
    "inv_log_uniform": {"distribution": "inv_log_uniform", "min": 0, "max": 4},
    "inv_log_uniform_values": {"distribution": "inv_log_uniform_values", "min": 1e-4,
                               "max": 1},
    "q_log_uniform": {"distribution": "q_log_uniform", "min": 0, "max": 6, "q": 2},
    "q_log_uniform_values": {"distribution": "q_log_uniform_values", "min": 1, "max": 1024,
                             "q": 4},
    "normal": {"distribution": "normal", "mu": 100, "sigma": 10},
    "q_normal": {"distribution": "q_normal", "mu": 0, "sigma": 5, "q": 0.5},
    "log_normal": {"distribution": "log_normal", "mu": 1, "sigma": 0.5},
    "q_log_normal": {"distribution": "q_log_normal", "mu": 2, "sigma": 0.5},
    "beta": {"distribution": "beta", "a": 2, "b": 5},
    "q_beta": {"distribution": "q_beta", "q": 0.1},
    "opt": {"parameters": {"lr": {"values": [0.1, 0.01]}, "momentum": {"value": 0.9},
                           "inner": {"parameters": {"eps": {"min": 1, "max": 3}}}}},
}


def space_of(params: dict[str, Any], method: str = "random") -> SearchSpace:
    config = parse_config({"program": "t.py", "method": method, "metric": {"name": "m"},
                           "parameters": params})
    return SearchSpace.from_config(config.parameters)


def study(seed: int = 0) -> optuna.Study:
    return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed))


@pytest.fixture(scope="module")
def draws() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """N (user params, internal params) pairs from a seeded RandomSampler."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space, st = space_of(PARAMS), study(0)
    out = []
    for _ in range(N):
        trial = st.ask()
        out.append((space.suggest(trial), dict(trial.params)))
    return out


def column(draws: list[tuple[dict[str, Any], dict[str, Any]]], name: str) -> list[Any]:
    return [user[name] for user, _ in draws]


def test_names_and_nesting(draws: list[Any]) -> None:
    space = space_of(PARAMS)
    assert "constant" not in space.names and "opt.momentum" not in space.names
    assert {"opt.lr", "opt.inner.eps", "weighted", "normal"} <= set(space.names)
    user, internal = draws[0]
    assert list(user) == list(PARAMS)
    assert user["constant"] == 2.5
    assert user["opt"]["momentum"] == 0.9 and user["opt"]["lr"] in (0.1, 0.01)
    assert 1 <= user["opt"]["inner"]["eps"] <= 3
    assert set(internal) == set(space.names)


def test_user_params_round_trip(draws: list[Any]) -> None:
    space = space_of(PARAMS)
    for user, internal in draws[:200]:
        assert space.user_params(internal) == user
    partial = space.user_params({"cat": "b"})
    assert partial == {"constant": 2.5, "cat": "b", "opt": {"momentum": 0.9}}


def test_flatten() -> None:
    nested = {"a": 1, "opt": {"lr": 0.1, "inner": {"eps": 2}}, "empty": {}}
    assert SearchSpace.flatten(nested) == {"a": 1, "opt.lr": 0.1, "opt.inner.eps": 2,
                                           "empty": {}}


def test_categorical_uniform_and_list_values(draws: list[Any]) -> None:
    counts = Counter(column(draws, "cat"))
    assert set(counts) == {"a", "b", "c"}
    assert all(abs(c / N - 1 / 3) < 0.03 for c in counts.values())
    lists = column(draws, "lists")
    assert all(isinstance(v, list) for v in lists)
    assert {tuple(v) for v in lists} == {("q_proj", "v_proj"), ("q_proj", "k_proj", "v_proj")}
    stored = {internal["lists"] for _, internal in draws}
    assert stored == {'["q_proj","v_proj"]', '["q_proj","k_proj","v_proj"]'}


def test_categorical_probabilities_are_honoured(draws: list[Any]) -> None:
    counts = Counter(column(draws, "weighted"))
    assert "never" not in counts
    for value, p in (("x", 0.2), ("y", 0.5), ("z", 0.3)):
        assert abs(counts[value] / N - p) < 0.03


def test_int_uniform_bounds_inclusive(draws: list[Any]) -> None:
    values = column(draws, "int_uniform")
    assert all(isinstance(v, int) for v in values)
    assert set(values) == set(range(11))
    assert abs(statistics.mean(values) - 5) < 0.2


def test_uniform(draws: list[Any]) -> None:
    values = column(draws, "uniform")
    assert -1 <= min(values) and max(values) <= 3
    assert abs(statistics.mean(values) - 1) < 0.06
    assert abs(statistics.pstdev(values) - 4 / math.sqrt(12)) < 0.05


def test_q_uniform_on_the_grid_of_q(draws: list[Any]) -> None:
    ints = column(draws, "q_uniform")
    assert all(isinstance(v, int) for v in ints) and min(ints) == 0 and max(ints) == 256
    assert abs(statistics.mean(ints) - 128) < 4
    quarters = column(draws, "q_uniform_float")
    assert set(quarters) == {0.0, 0.25, 0.5, 0.75, 1.0}
    offgrid = Counter(column(draws, "q_uniform_offgrid"))  # round(U(0.3, 2.3)), like W&B
    assert set(offgrid) == {0, 1, 2}
    assert abs(offgrid[0] / N - 0.1) < 0.03 and abs(offgrid[1] / N - 0.5) < 0.03


@pytest.mark.parametrize(
    ("name", "lo", "hi"),
    [
        ("log_uniform", math.exp(-4), 1.0),
        ("log_uniform_values", 1e-4, 1.0),
        ("inv_log_uniform", math.exp(-4), 1.0),  # log(1/X) ~ U(0, 4)
        ("inv_log_uniform_values", 1e-4, 1.0),  # log(1/X) ~ U(log 1/max, log 1/min)
    ],
)
def test_log_uniform_family(draws: list[Any], name: str, lo: float, hi: float) -> None:
    values = column(draws, name)
    assert lo * (1 - 1e-9) <= min(values) and max(values) <= hi * (1 + 1e-9)
    geometric_mean = math.sqrt(lo * hi)
    assert abs(math.log(statistics.median(values) / geometric_mean)) < 0.15
    logs = [math.log(v) for v in values]  # log X is uniform on [log lo, log hi]
    assert abs(statistics.pstdev(logs) - (math.log(hi) - math.log(lo)) / math.sqrt(12)) < 0.05


def test_q_log_uniform(draws: list[Any]) -> None:
    values = column(draws, "q_log_uniform")
    assert all(isinstance(v, int) and v % 2 == 0 for v in values)
    assert max(values) <= round(math.exp(6) / 2) * 2
    fours = column(draws, "q_log_uniform_values")
    assert all(isinstance(v, int) and v % 4 == 0 for v in fours)
    assert 20 <= statistics.median(fours) <= 44  # geometric mean of [1, 1024] is 32


def test_normal(draws: list[Any]) -> None:
    values = column(draws, "normal")
    assert abs(statistics.mean(values) - 100) < 0.6
    assert abs(statistics.pstdev(values) - 10) < 0.5
    q = column(draws, "q_normal")
    assert all(v * 2 == round(v * 2) for v in q)
    assert abs(statistics.mean(q)) < 0.3 and abs(statistics.pstdev(q) - 5) < 0.3


def test_log_normal(draws: list[Any]) -> None:
    values = column(draws, "log_normal")
    logs = [math.log(v) for v in values]
    assert min(values) > 0
    assert abs(statistics.mean(logs) - 1) < 0.03 and abs(statistics.pstdev(logs) - 0.5) < 0.03
    assert abs(statistics.median(values) - math.e) < 0.1
    q = column(draws, "q_log_normal")
    assert all(isinstance(v, int) for v in q)
    assert abs(statistics.median(q) - math.exp(2)) <= 1


def test_beta(draws: list[Any]) -> None:
    values = column(draws, "beta")
    assert 0 < min(values) and max(values) < 1
    assert abs(statistics.mean(values) - 2 / 7) < 0.01
    tenths = column(draws, "q_beta")
    assert set(tenths) <= {round(k / 10, 1) for k in range(11)}
    assert len(set(tenths)) == 11 and abs(statistics.mean(tenths) - 0.5) < 0.02


def test_grid_points_enumerate_the_full_product() -> None:
    params = {
        "bs": {"values": [16, 32, 64]},
        "mods": {"values": [["q"], ["q", "v"]]},
        "layers": {"min": 1, "max": 3},
        "hidden": {"distribution": "q_uniform", "min": 64, "max": 256, "q": 64},
        "frac": {"distribution": "q_uniform", "min": 0.0, "max": 0.5, "q": 0.25},
        "seed": {"value": 7},
        "opt": {"parameters": {"lr": {"values": [0.1, 0.01]}}},
    }
    space = space_of(params, method="grid")
    assert space.is_finite()
    points = space.grid_points()
    assert len(points) == 3 * 2 * 3 * 4 * 3 * 2
    st = study(1)
    for point in points:
        st.enqueue_trial(point)
    seen = []
    for _ in points:
        trial = st.ask()
        seen.append(space.suggest(trial))
    key = [(p["bs"], tuple(p["mods"]), p["layers"], p["hidden"], p["frac"], p["opt"]["lr"])
           for p in seen]
    expected = set(itertools.product([16, 32, 64], [("q",), ("q", "v")], [1, 2, 3],
                                     [64, 128, 192, 256], [0.0, 0.25, 0.5], [0.1, 0.01]))
    assert len(set(key)) == len(key) and set(key) == expected
    assert all(p["seed"] == 7 for p in seen)


def test_grid_with_probabilities_and_offgrid_q() -> None:
    space = space_of({"w": {"values": ["a", "b", "c"], "probabilities": [0.5, 0.0, 0.5]},
                      "k": {"distribution": "q_uniform", "min": 0.3, "max": 2.3}}, "grid")
    users = [space.user_params(p) for p in space.grid_points()]
    assert sorted((u["w"], u["k"]) for u in users) == [
        ("a", 0), ("a", 1), ("a", 2), ("c", 0), ("c", 1), ("c", 2)]


@pytest.mark.parametrize("dist", ["uniform", "log_uniform_values", "normal", "beta",
                                  "q_log_uniform_values"])
def test_infinite_grid_is_refused(dist: str) -> None:
    spec: dict[str, Any] = {"distribution": dist}
    if dist in ("uniform", "log_uniform_values", "q_log_uniform_values"):
        spec.update(min=1, max=2)
    space = space_of({"ok": {"values": [1, 2]}, "opt": {"parameters": {"bad": spec}}})
    assert not space.is_finite()
    with pytest.raises(ConfigError) as info:
        space.grid_points()
    assert str(info.value) == (f"grid search needs finite values; parameter opt.bad has "
                               f"distribution {dist}; use values: [...]")


def test_too_large_grid_is_refused() -> None:
    params = {f"p{i}": {"min": 0, "max": 99} for i in range(4)}
    with pytest.raises(ConfigError, match="at most 1,000,000 points for method grid, found "
                       "100,000,000 points"):
        space_of(params, "grid")  # refused when the sweep file is read
    space = space_of(params)  # the same parameters under method random
    assert space.grid_size() == 100**4
    with pytest.raises(ConfigError, match="more than"):
        space.grid_points()


def test_stale_categorical_value_is_a_config_error() -> None:
    space = space_of({"c": {"values": ["a", "b"]}})
    with pytest.raises(ConfigError, match="did the sweep file change"):
        space.user_params({"c": "zzz"})
