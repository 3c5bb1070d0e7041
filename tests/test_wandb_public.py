"""Real W&B sweep files from public GitHub repositories, loaded as they are.

Every file under ``tests/data/wandb_public/`` is a sweep configuration copied byte for byte from
a public repository (the 3-line header names the source commit and license). hpo promises to
accept W&B sweep files unchanged, so each file must load with :func:`hpo.config.load_config` and
pass ``hpo sweep FILE --dry-run`` (which validates and prints the plan, and must write nothing:
no ``hpo.db``), except the few in ``EXPECTED_REFUSALS``, which W&B cannot run either. A file
that W&B accepts and hpo refuses is a failing test here, on purpose: it is not listed away.

The dry runs call ``hpo.cli.main`` in this process, as tests/test_cli_manage.py does (a
subprocess costs over a second each); one test runs the real ``python -m hpo.cli`` entry point.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hpo.config import load_config
from hpo.errors import ConfigError
from tests.test_cli_manage import hpo  # the CLI in this process

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "wandb_public"
FILES = sorted(DATA.glob("*.yaml"))

# entity/project/description are read and ignored with a warning (hpo.config's docstring)
pytestmark = pytest.mark.filterwarnings(r"ignore:.*W&B key '\w+' is ignored by hpo:UserWarning")

# file -> (why W&B refuses it too, a part of hpo's message). W&B's `wandb sweep` only warns
# ("Malformed sweep config detected!") and creates the sweep, but its controller builds every
# parameter with sweeps.params.HyperParameter, which raises "invalid hyperparameter
# configuration: NAME" for a parameter that matches none of the schema's parameter shapes
# (each has additionalProperties: false), so W&B never starts a run of these files.
EXPECTED_REFUSALS: dict[str, tuple[str, str]] = {
    "11_brain_age_log_uniform_hyperband.yaml": (
        "parameters.similarity has values plus the keys n_conv_layers and layer_sizes "
        "(mis-indented parameters): no W&B parameter shape allows extra keys",
        "found unknown key 'n_conv_layers'"),
    "23_blpo_uniform_with_values.yaml": (
        "distribution: uniform / int_uniform with values: (and actor-LR with value:): W&B's "
        "uniform and int_uniform shapes take only min, max and distribution",
        "expected only max, min with distribution uniform, found values"),
}


# file -> (why, a part of hpo's message): files W&B runs but hpo refuses on purpose, because
# what W&B does with them is not what their author meant, and the fix is one line.
STRICTER_THAN_WANDB: dict[str, tuple[str, str]] = {
    "06_platalea_bad_goal.yaml": (
        "metric.goal is 'hello world ...': W&B warns and its hyperband falls back to minimize; "
        "a mistyped goal would silently optimize the wrong direction",
        "metric.goal: expected 'minimize' or 'maximize'"),
}
# file -> (why, a part of the dry run's error): the file loads, but its command cannot run
DRY_RUN_REFUSALS: dict[str, tuple[str, str]] = {
    "22_fastmri_custom_macros.yaml": (
        "command has '-l ${lr}': W&B substitutes only whole-element macros, so the program "
        "would get the literal text '${lr}', not the learning rate",
        "unknown macro ${lr}"),
}
REFUSED = {**EXPECTED_REFUSALS, **STRICTER_THAN_WANDB}


def test_counts_in_the_readme_hold():
    """README / the note say: of the corpus, how many load and how many W&B refuses too."""
    accepted = [p for p in FILES if p.name not in REFUSED]
    assert (len(FILES), len(accepted), len(EXPECTED_REFUSALS), len(STRICTER_THAN_WANDB),
            len(DRY_RUN_REFUSALS)) == (39, 36, 2, 1, 1)


def _ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def test_the_corpus_is_there():
    assert 25 <= len(FILES) <= 40, [p.name for p in FILES]
    assert set(EXPECTED_REFUSALS) <= {p.name for p in FILES}
    for path in FILES:
        head = path.read_bytes().splitlines()[:3]
        assert head[0].startswith(b"# source: https://github.com/"), path.name
        assert head[1].startswith(b"# license: "), path.name
        assert path.stat().st_size < 8192, path.name


@pytest.mark.parametrize("path", FILES, ids=_ids(FILES))
def test_load_config(path: Path):
    if path.name in REFUSED:
        why, part = REFUSED[path.name]
        with pytest.raises(ConfigError) as info:
            load_config(path)
        message = str(info.value)
        assert part in message and path.name in message, (why, message)
        return
    config = load_config(path)  # accepted: returns; a ConfigError here is an hpo refusal
    assert config.parameters


def _workdir(tmp_path: Path, path: Path) -> tuple[Path, list[str]]:
    """A working directory holding the file's training script, as its author's checkout does
    (``program: ../main_supcon.py`` lands inside tmp_path too), and the extra CLI options."""
    work = tmp_path / "checkout" / "run"
    work.mkdir(parents=True)
    program = load_config(path).program
    if not program:
        return work, []
    if os.path.isabs(program):
        # A script on the author's cluster (/users/...): hpo checks `program:` only where the
        # trials run, and with agents that is the agents' machines, so the file itself is
        # still validated and planned in full.
        return work, [] if Path(program).is_file() else ["--backend", "agents"]
    script = (work / program).resolve()
    assert tmp_path in script.parents, program
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text("")
    return work, []


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.mark.parametrize("path", [p for p in FILES if p.name not in REFUSED],
                         ids=_ids([p for p in FILES if p.name not in REFUSED]))
def test_dry_run(path: Path, tmp_path, capsys, monkeypatch):
    try:
        work, extra = _workdir(tmp_path, path)
    except ConfigError as exc:
        pytest.skip(f"hpo refuses the file itself (see test_load_config): {exc}")
    monkeypatch.chdir(work)
    before = _files(tmp_path)
    code, out, err = hpo(capsys, monkeypatch, "sweep", str(path), "--dry-run", *extra)
    if path.name in DRY_RUN_REFUSALS:
        why, part = DRY_RUN_REFUSALS[path.name]
        assert code == 2 and part in err, (why, err)
    else:
        assert code == 0, err
        assert out.rstrip().endswith("dry run: nothing was run or written."), out
    assert _files(tmp_path) == before  # no hpo.db, nothing at all
    assert not list(tmp_path.rglob("*.db"))


def test_dry_run_through_the_real_entry_point(tmp_path):
    """One file through ``python -m hpo.cli``, the way tests/test_cli_manage.py runs it."""
    path = DATA / "08_hydra_args_no_hyphens.yaml"
    work, extra = _workdir(tmp_path, path)
    before = _files(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1", "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "hpo.cli", "sweep", str(path), "--dry-run",
                           *extra], cwd=work, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "${args_no_hyphens}" not in proc.stdout and "training.max_epochs=" in proc.stdout
    assert _files(tmp_path) == before and not list(tmp_path.rglob("*.db"))
