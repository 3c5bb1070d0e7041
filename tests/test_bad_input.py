"""Hostile or careless input (issue 13): refused at once with a message that says what to fix,
never a hang, a blow-up, or a sweep that fails trial after trial.

Also holds what already worked: a categorical value cannot run a shell command, the report
escapes HTML, and SQL takes values as bound parameters.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from hpo.config import (
    LOCAL_MAX_PARALLEL,
    MAX_ALIAS_EXPANSION,
    SweepConfig,
    check_program,
    load_config,
    parse_config,
)
from hpo.errors import ConfigError
from hpo.space import MAX_GRID, SearchSpace

REPO = Path(__file__).resolve().parents[1]


def cfg(method: str = "random", **params: Any) -> dict[str, Any]:
    return {"trainer": "examples.objectives:noop", "method": method, "metric": {"name": "loss"},
            "parameters": params or {"x": {"min": 0.0, "max": 1.0}}}


def refused(data: Any, match: str) -> str:
    with pytest.raises(ConfigError, match=match) as info:
        parse_config(data)
    return str(info.value)


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def quick(seconds: float = 2.0) -> Any:
    """Context manager: the block must finish within ``seconds``."""
    class _Timer:
        def __enter__(self) -> None:
            self.start = time.monotonic()

        def __exit__(self, *exc: object) -> None:
            took = time.monotonic() - self.start
            assert took < seconds, f"took {took:.1f}s"
    return _Timer()


# -- grids: sizes are computed, not built -------------------------------------------------------
@pytest.mark.parametrize(("spec", "shown"), [
    ({"distribution": "q_uniform", "min": 0, "max": 1, "q": 1e-12}, "1,000,000,000,001 points"),
    ({"distribution": "q_uniform", "min": 0.3, "max": 1e9, "q": 0.001}, "points"),  # off-grid q
    ({"distribution": "q_uniform", "min": 0, "max": 1, "q": 5e-324}, "more than 10^308 points"),
    ({"min": -(2**52), "max": 2**52}, "about 10^15 points"),  # int grid: a MemoryError before
])
def test_huge_grid_is_refused_at_load_without_building_it(spec: dict, shown: str) -> None:
    with quick():
        message = refused(cfg("grid", x=spec), f"at most {MAX_GRID:,} points")
    assert shown in message and "method: random" in message


def test_grid_product_is_refused_and_space_checks_size_first() -> None:
    params = {f"p{i}": {"values": list(range(40))} for i in range(4)}  # 40^4 = 2,560,000
    refused(cfg("grid", **params), "2,560,000 points")
    space = SearchSpace.from_config(parse_config(cfg("random", **params)).parameters)
    assert space.grid_size() == 40**4
    huge = SearchSpace.from_config(parse_config(cfg(
        "random", x={"distribution": "q_uniform", "min": 0, "max": 1, "q": 1e-12})).parameters)
    with quick(), pytest.raises(ConfigError, match="more than 1,000,000"):
        huge.grid_points()
    ok = SearchSpace.from_config(parse_config(cfg("grid", a={"values": [1, 2, 3]},
                                                  b={"min": 1, "max": 4})).parameters)
    assert ok.grid_size() == 12 and len(ok.grid_points()) == 12


def test_tiny_q_samples_without_overflow() -> None:
    import optuna

    spec = {"distribution": "q_uniform", "min": 0, "max": 1, "q": 5e-324}
    space = SearchSpace.from_config(parse_config(cfg(x=spec)).parameters)
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(0)).ask()
    assert 0 <= space.suggest(trial)["x"] <= 1


# -- YAML: alias bombs, cycles, deep nesting, odd scalars -----------------------------------------
def billion_laughs(levels: int = 9) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\nmethod: random\n"


def test_yaml_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    path = write(tmp_path, billion_laughs())
    with quick(), pytest.raises(ConfigError, match="YAML aliases .* expand this sweep to "
                                f".* more than {MAX_ALIAS_EXPANSION:,}"):
        load_config(path)
    with quick(), pytest.raises(ConfigError, match="expand"):  # the same text, given directly
        parse_config({"method": "random"}, text=billion_laughs())


def test_shared_python_structures_are_refused_quickly() -> None:
    node: Any = ["lol"] * 10
    for _ in range(9):
        node = [node] * 10
    with quick():
        refused({**cfg(), "trainer_args": {"bomb": node}}, "shared values expand")
    loop: list[Any] = []
    loop.append(loop)
    refused({**cfg(), "trainer_args": {"loop": loop}}, "contains itself")


def test_modest_aliases_still_work(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        method: random
        metric: {name: loss}
        parameters:
          lr: &lr {min: 0.001, max: 0.1}
          lr2: *lr
        trainer: examples.objectives:noop
        """)
    config = load_config(path)
    assert config.parameters["lr"] == config.parameters["lr2"]


@pytest.mark.parametrize(("text", "match"), [
    ("a: &a [1, *a]\n", r"s.yaml:1: a value contains itself"),
    ("a: " + "[" * 100 + "]" * 100 + "\n", "nested more than 64 levels"),
    ("a: " + "[" * 3000 + "]" * 3000 + "\n", "nested more than 64 levels"),
    ('- "\\U0a0010000"\n', "YAML value error"),  # found by the fuzzer: chr() ValueError
    ('- "\\Ua000D8253"\n', "YAML value error"),  # found by the fuzzer: OverflowError
    ("x: 2020-13-01\n", "YAML value error: month must be in 1..12"),
    ("x: !!int abc\n", "YAML value error"),
    ("? [a, b]\n: c\n", "YAML syntax error"),
])
def test_odd_yaml_is_one_config_error(tmp_path: Path, text: str, match: str) -> None:
    with quick(5), pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path, text))


def test_non_string_keys_in_a_parameter() -> None:
    """Found by the fuzzer: an int key inside a parameter raised TypeError."""
    refused(cfg(x={1: 2}), "parameters.x.1: expected one of")
    refused(cfg(x={None: {0: None}}), "expected one of")


# -- values that are accepted today but break later -----------------------------------------------
@pytest.mark.parametrize(("spec", "path"), [
    ({"values": [float("nan"), float("inf"), 1]}, "parameters.x.values.0"),
    ({"values": [1, [2, float("-inf")]]}, "parameters.x.values.1"),
    ({"value": float("inf")}, "parameters.x.value"),
    ({"values": ["1e400", 1]}, "parameters.x.values.0"),  # a YAML string that becomes inf
])
def test_non_finite_values_are_refused(spec: dict, path: str) -> None:
    message = refused(cfg(x=spec), "finite numbers")
    assert path in message and ".nan and .inf" in message


def test_non_finite_values_in_a_file(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        method: grid
        metric: {name: loss}
        parameters:
          x: {values: [.nan, .inf, 1]}
        trainer: examples.objectives:noop
        """)
    with pytest.raises(ConfigError, match=r"s.yaml:4: parameters.x.values.0: expected finite"):
        load_config(path)


@pytest.mark.parametrize(("extra", "match"), [
    ({"budget": {"minutes": -1}}, "budget.minutes: expected greater than 0"),
    ({"budget": {"minutes": 0}}, "budget.minutes: expected greater than 0"),
    ({"budget": {"minutes": float("inf")}}, "budget.minutes: expected a finite number"),
    ({"budget": {"trials": 0}}, "budget.trials: expected greater than or equal to 1"),
    ({"parallel": 0}, "parallel: expected greater than or equal to 1"),
    ({"parallel": 100_000}, f"at most {LOCAL_MAX_PARALLEL} concurrent trials on backend local"),
    ({"parallel": 100_000, "backend": "ray"}, "at most 4096 concurrent trials on backend ray"),
    ({"metric": {"name": "loss", "target": float("nan")}}, "metric.target"),
    ({"resources": {"gpu": float("inf")}}, "resources.gpu"),
    ({"parameters": {"n": {"min": 0, "max": 2**60}}}, r"between -2\*\*53 and 2\*\*53"),
    ({"name": "../../etc/x"}, "name: expected a sweep name without '/'"),
    ({"timeout": 0}, "timeout: expected greater than 0"),
    ({"timeout": True}, "timeout: expected a number of seconds"),
    ({"timeout": float("inf")}, "timeout: expected a finite number"),
])
def test_bad_budgets_and_bounds_are_refused(extra: dict, match: str) -> None:
    refused({**cfg(), **extra}, match)


def test_parallel_cap_names_the_way_up(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refused({**cfg(), "parallel": 100_000}, "HPO_MAX_PARALLEL=N")
    assert "found 100000" in message
    monkeypatch.setenv("HPO_MAX_PARALLEL", "200000")
    assert parse_config({**cfg(), "parallel": 100_000}).parallel == 100_000
    monkeypatch.setenv("HPO_MAX_PARALLEL", "lots")
    with pytest.raises(ConfigError, match="HPO_MAX_PARALLEL='lots': expected a positive"):
        parse_config(cfg())


def test_overrides_are_validated_before_anything_runs() -> None:
    config = parse_config(cfg())
    for bad, match in [({"minutes": -1}, "budget.minutes"), ({"trials": 0}, "budget.trials"),
                       ({"parallel": 0}, "parallel"), ({"parallel": 10**6}, "at most"),
                       ({"timeout": -5}, "timeout")]:
        with pytest.raises(ConfigError, match=match) as info:
            config.with_overrides(**bad)
        assert "with the overrides" in str(info.value)


def test_timeout_key() -> None:
    """``timeout`` (seconds per trial) is optional; W&B files have none."""
    assert parse_config(cfg()).timeout is None
    assert "timeout" not in parse_config(cfg()).to_dict()
    config = parse_config({**cfg(), "timeout": "90"})
    assert config.timeout == 90 and config.to_dict()["timeout"] == 90
    assert parse_config(config.to_dict()).timeout == 90
    assert config.with_overrides(timeout=2.5).timeout == 2.5
    assert config.with_overrides(timeout=None).timeout == 90
    assert isinstance(config, SweepConfig)


# -- program: sweeps name a file that must exist --------------------------------------------------
PROGRAM_SWEEP = """\
method: random
metric: {{name: loss}}
parameters:
  x: {{min: 0.0, max: 1.0}}
program: {program}
{command}"""


def program_config(tmp_path: Path, program: str, command: str = "") -> SweepConfig:
    sub = tmp_path / "sweeps"
    sub.mkdir(exist_ok=True)
    path = sub / "p.yaml"
    path.write_text(PROGRAM_SWEEP.format(program=program, command=command))
    return load_config(path)  # loading never looks for files (the sweep may run elsewhere)


def test_missing_program_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = program_config(tmp_path, "trian.py")
    with pytest.raises(ConfigError, match=r"p.yaml:5: program: expected a training script that "
                       r"exists, found no 'trian.py' in "):
        check_program(config)
    with pytest.raises(ConfigError, match="src/train"):
        check_program(program_config(tmp_path, "src/train"))
    with pytest.raises(ConfigError, match="found no /nowhere/train.py;"):
        check_program(program_config(tmp_path, "/nowhere/train.py"))


def test_program_next_to_the_sweep_file_says_how_to_run_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Trials start the program from the working directory (as wandb agent does)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "there.py").write_text("")
    with pytest.raises(ConfigError, match=r"'there.py' is next to the sweep file, in "
                       r".*sweeps, but .* run hpo from .*sweeps, or write program: "
                       r"sweeps/there.py"):
        check_program(program_config(tmp_path, "there.py"))
    monkeypatch.chdir(tmp_path / "sweeps")
    check_program(program_config(tmp_path, "there.py"))


def test_programs_that_will_be_found_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "here.py").write_text("")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train").write_text("")
    check_program(program_config(tmp_path, "here.py"))  # in the working directory
    check_program(program_config(tmp_path, "src/train"))
    check_program(program_config(tmp_path, str(tmp_path / "here.py")))  # absolute
    check_program(program_config(tmp_path, "mytrain"))  # a bare command name
    check_program(program_config(tmp_path, "gone.py", "command: [bash, run.sh]\n"))  # unused
    check_program(parse_config(cfg()))  # a trainer sweep


# -- the command line refuses before creating anything -------------------------------------------
def run_hpo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "hpo.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("program", "options", "match"), [
    ("examples.objectives:noop", ["--minutes", "-1"], "budget.minutes: expected greater than 0"),
    ("examples.objectives:noop", ["--trials", "0"], "budget.trials"),
    ("examples.objectives:noop", ["--parallel", "100000"], "concurrent trials"),
    ("examples.objectives:noop", ["--trial-timeout", "0"], "timeout: expected greater than 0"),
    ("missing.py", [], "program: expected a training script that exists"),
])
def test_cli_refuses_before_creating_the_sweep(tmp_path: Path, program: str, options: list,
                                               match: str) -> None:
    kind = "trainer" if ":" in program else "program"
    path = write(tmp_path, f"""\
        method: random
        metric: {{name: loss}}
        parameters:
          x: {{min: 0.0, max: 1.0}}
        {kind}: {program}
        """)
    db = tmp_path / "hpo.db"
    proc = run_hpo("sweep", str(path), "--storage", f"sqlite:///{db}", *options, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert match in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 2
    assert not db.exists()


# -- what already worked, held by tests ------------------------------------------------------------
ARGV_SCRIPT = """\
import json, sys
with open(sys.argv[1], "a") as f:
    f.write(json.dumps(sys.argv[2:]) + "\\n")
print(json.dumps({"loss": 1.0}))
"""


def test_a_hostile_categorical_value_runs_no_shell(tmp_path: Path) -> None:
    """Trial values reach a program as argv items, never through a shell."""
    from hpo import run_sweep

    pwned = tmp_path / "pwned"
    script = tmp_path / "argv.py"
    script.write_text(ARGV_SCRIPT)
    log = tmp_path / "argv.jsonl"
    hostile = [f"; touch {pwned}", f"$(touch {pwned})", f"`touch {pwned}`",
               f"' && touch {pwned} #", f"x\ntouch {pwned}", f"| touch {pwned}"]
    config = {"method": "grid", "metric": {"name": "loss"}, "program": str(script),
              "command": ["${interpreter}", "${program}", str(log), "${args}"],
              "parameters": {"v": {"values": hostile}}}
    result = run_sweep(config, storage=f"sqlite:///{tmp_path / 'hpo.db'}", name="hostile")
    assert result.counts.get("complete") == len(hostile)
    assert not pwned.exists()
    seen = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted(argv[0] for argv in seen) == sorted(f"--v={v}" for v in hostile)


def test_report_escapes_html_and_sql_takes_bound_parameters(tmp_path: Path) -> None:
    """A name with SQL quotes and values with markup: stored as given, shown escaped."""
    from hpo import run_sweep
    from hpo.reporting import build_report
    from hpo.tracking import TrackingStore

    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    name = "x'); DROP TABLE hpo_sweeps; --"
    evil = "<script>alert(1)</script>"
    config = {"method": "grid", "metric": {"name": "loss"}, "trainer": "examples.objectives:noop",
              "parameters": {"v": {"values": [evil, "<img src=x onerror=alert(2)>"]}}}
    result = run_sweep(config, storage=url, name=name)
    assert result.counts.get("complete") == 2
    store = TrackingStore(url)
    try:
        assert [s.name for s in store.list_sweeps()] == [name]
        assert {r.params["v"] for r in store.trials(name)} == {
            evil, "<img src=x onerror=alert(2)>"}
    finally:
        store.close()
    html = build_report(name, storage=url, path=tmp_path / "r.html").read_text("utf-8")
    assert evil not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html or "\\u003cscript" in html


def test_run_sweep_refuses_bad_overrides_before_creating_anything(tmp_path):
    """The Python API validates minutes/trials/timeout through the config, like the CLI:
    nothing is created (before, minutes=-1 left a sweep marked running)."""
    import hpo
    from hpo.errors import ConfigError

    db = tmp_path / "hpo.db"
    cfg = {"name": "api", "method": "random", "metric": {"name": "loss"},
           "parameters": {"x": {"min": 0.0, "max": 1.0}}, "storage": f"sqlite:///{db}"}
    for bad in ({"minutes": -1}, {"trials": 0}, {"timeout": -5}):
        with pytest.raises(ConfigError):
            hpo.run_sweep(cfg, objective=lambda p, ctx: p["x"], **bad)
    assert not db.exists()
