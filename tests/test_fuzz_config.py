"""Fuzzing the sweep-file parser (hypothesis): random YAML text and random nested structures.

Whatever comes in, ``load_config`` / ``parse_config`` either return a valid ``SweepConfig`` or
raise a ``ConfigError`` with a message, never another exception, and each input takes at most
a few seconds. A valid config also survives ``to_dict`` and sampling one trial of its space.
The examples per test are bounded so the whole module stays well under a minute.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpo.config import DISTRIBUTIONS, SweepConfig, load_config, parse_config
from hpo.errors import ConfigError
from hpo.space import SearchSpace

optuna.logging.set_verbosity(optuna.logging.WARNING)
SECONDS_PER_INPUT = 3.0
FUZZ = settings(
    max_examples=int(os.environ.get("HPO_FUZZ_EXAMPLES", "250")),  # raise it for a long run
    deadline=None,  # timed below, per input, against SECONDS_PER_INPUT
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
    derandomize=False,
)
TRIED = {"text": 0, "structure": 0, "sweep": 0}

TOP = ["method", "metric", "parameters", "early_terminate", "run_cap", "program", "command",
       "trainer", "trainer_args", "resources", "parallel", "backend", "storage", "seed",
       "budget", "name", "max_retries", "timeout", "entity", "project", "description"]
PARAM = ["distribution", "value", "values", "probabilities", "min", "max", "mu", "sigma", "q",
         "a", "b", "parameters"]
NESTED = ["name", "goal", "target", "type", "min_iter", "max_iter", "s", "eta", "strict",
          "trials", "minutes", "cpu", "gpu", "impute"]
WORDS = [*TOP, *PARAM, *NESTED, *DISTRIBUTIONS, "grid", "random", "bayes", "tpe", "gp", "cmaes",
         "qmc", "hyperband", "asha", "median", "none", "minimize", "maximize", "local", "ray",
         "agents", "loss", "train.py", "examples.objectives:noop", "${program}", "${args}",
         "1e-5", "-3", "0.5", ".nan", ".inf", "null", "true", "~", "x", "lr", "postgresql://u:p@h/db"]

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(WORDS), st.text(max_size=12),
)
keys = st.one_of(st.sampled_from(WORDS), st.text(max_size=8), st.integers(-3, 3), st.none())
structures = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(keys, inner, max_size=5)),
    max_leaves=40,
)


@st.composite
def params_(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    """A ``parameters:`` mapping, mostly well-formed, sometimes not."""
    out: dict[str, Any] = {}
    for name in draw(st.lists(st.sampled_from(["lr", "x", "opt", "n", "b.c"]), min_size=1,
                              max_size=3, unique=True)):
        if depth < 2 and draw(st.integers(0, 5)) == 0:
            out[name] = {"parameters": draw(params_(depth + 1))}
            continue
        spec: dict[str, Any] = {}
        if draw(st.booleans()):
            spec["distribution"] = draw(st.sampled_from([*DISTRIBUTIONS, "bogus"]))
        for key in draw(st.lists(st.sampled_from(PARAM[1:-1]), max_size=4, unique=True)):
            if key in ("values", "probabilities"):
                spec[key] = draw(st.one_of(st.lists(scalars, max_size=5), scalars))
            else:
                spec[key] = draw(scalars)
        out[name] = spec
    return out


@st.composite
def sweeps(draw: st.DrawFn) -> dict[str, Any]:
    """A sweep mapping close to valid, so validation gets deep."""
    data: dict[str, Any] = {
        "method": draw(st.sampled_from(["grid", "random", "bayes", "tpe", "qmc", "nope"])),
        "metric": {"name": "loss", "goal": draw(st.sampled_from(["minimize", "maximize", 1]))},
        "parameters": draw(params_()),
        draw(st.sampled_from(["trainer", "program"])): draw(
            st.sampled_from(["examples.objectives:noop", "train.py", "lora"])),
    }
    for key in draw(st.lists(st.sampled_from(TOP), max_size=4, unique=True)):
        data[key] = draw(structures)
    return data


EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "search_spaces").rglob("*.yaml"))
SEEDS = [p.read_text(encoding="utf-8") for p in EXAMPLES]


@st.composite
def mutated_examples(draw: st.DrawFn) -> str:
    """One of the repository's sweep files with a few lines dropped, repeated, re-indented or
    with a value replaced."""
    lines = draw(st.sampled_from(SEEDS)).splitlines()
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.integers(0, 4))
        if op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[i])
        elif op == 2:
            lines[i] = " " * draw(st.integers(0, 6)) + lines[i].lstrip()
        elif op == 3 and ":" in lines[i]:
            head = lines[i].split(":", 1)[0]
            lines[i] = f"{head}: {draw(st.sampled_from(WORDS))}"
        else:
            lines[i] = lines[i] + draw(st.text(alphabet=":-[]{}&*!|>'\",#@ ab1", max_size=4))
    return "\n".join(lines) + "\n"


@st.composite
def yaml_texts(draw: st.DrawFn) -> str:
    """YAML text: a dumped structure, then maybe cut, spliced or given anchors and aliases;
    or a mutated example sweep file."""
    if SEEDS and draw(st.integers(0, 3)) == 0:
        return draw(mutated_examples())
    base = draw(st.one_of(sweeps(), structures))
    try:
        text = yaml.safe_dump(base, default_flow_style=draw(st.booleans()), sort_keys=False)
    except (yaml.YAMLError, ValueError):
        text = str(base)
    kind = draw(st.integers(0, 4))
    if kind == 1:  # cut somewhere
        text = text[: draw(st.integers(0, len(text)))]
    elif kind == 2:  # splice in YAML punctuation
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.text(alphabet=":-[]{}&*!|>'\"#,\n ?%@`~ab1", max_size=12)) \
            + text[at:]
    elif kind == 3:  # anchors and aliases, nested
        n = draw(st.integers(1, 6))
        lines = ["a0: &a0 [1, 2]"] + [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]" for i in range(1, n)]
        text = "\n".join(lines) + "\n" + text
    elif kind == 4:  # arbitrary text
        text = draw(st.text(max_size=200))
    return text


def _check(run: Any) -> SweepConfig | None:
    """Run one parse; only a SweepConfig or a ConfigError with a message may come out."""
    start = time.monotonic()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config = run()
    except ConfigError as exc:
        assert str(exc).strip(), "a ConfigError without a message"
        config = None
    elapsed = time.monotonic() - start
    assert elapsed < SECONDS_PER_INPUT, f"one input took {elapsed:.1f}s"
    if config is not None:
        _check_valid(config)
    return config


def _check_valid(config: SweepConfig) -> None:
    """A valid config round-trips through to_dict and its space samples one trial."""
    assert isinstance(config, SweepConfig)
    again = parse_config(config.to_dict())
    assert again.to_dict() == config.to_dict()
    space = SearchSpace.from_config(config.parameters)
    if config.method == "grid":
        size = space.grid_size()
        assert 0 <= size <= 1_000_000
        if size <= 10_000:
            assert len(space.grid_points()) == size
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(0))
    trial = study.ask()
    params = space.suggest(trial)
    assert space.user_params(trial.params) == params
    flat = SearchSpace.flatten(params)
    assert all(not isinstance(v, float) or math.isfinite(v) for v in flat.values())


@pytest.fixture(scope="module", autouse=True)
def _report_counts() -> Any:
    """Shows (with -s) how many inputs each fuzzer tried."""
    yield
    print(f"\nfuzz inputs tried: {TRIED}")


@pytest.fixture(scope="module")
def folder() -> Any:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)


@FUZZ
@given(data=structures)
def test_random_structures(data: Any) -> None:
    TRIED["structure"] += 1
    _check(lambda: parse_config(data))


@FUZZ
@given(data=sweeps())
def test_random_near_valid_sweeps(data: dict[str, Any]) -> None:
    TRIED["sweep"] += 1
    _check(lambda: parse_config(data))


@FUZZ
@given(text=yaml_texts())
def test_random_yaml_text(folder: Path, text: str) -> None:
    TRIED["text"] += 1
    path = folder / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    _check(lambda: load_config(path))
    _check(lambda: parse_config(yaml.safe_load(text), text=text)
           if _safe_yaml(text) else parse_config({}))


def _safe_yaml(text: str) -> bool:
    try:
        data = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError, ValueError, OverflowError):  # PyYAML's own
        return False
    return isinstance(data, dict) and len(text) < 2000  # small: no alias bombs from here
