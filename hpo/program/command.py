"""A program trial's command line, environment and runner options (see hpo.program)."""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
import re
import site
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo.errors import HpoError, TrainerError
from hpo.program.wire import METRICS_FILE_ENV, PARAMS_FILE_ENV

if TYPE_CHECKING:
    from hpo.trial import TrialContext

DEFAULT_COMMAND = ("${env}", "${interpreter}", "${program}", "${args}")
#: Macros that expand to several argv elements: they must be a whole element.
LIST_MACROS = ("args", "args_no_equals", "args_no_hyphens", "args_no_boolean_flags", "env")
#: Macros that expand to one string: a whole element, or part of one (hpo extension).
TEXT_MACROS = ("interpreter", "program", "args_json", "args_json_file")
#: ``${envvar:NAME}`` (group 1) or ``${macro}`` (group 2).
_TOKEN = re.compile(r"\$\{(?:envvar:([A-Za-z_][A-Za-z0-9_]*)|([A-Za-z_]+))\}")



class ScriptFailed(HpoError):
    """The trial's script exited non-zero, ran too long, or never reported the objective."""


# -- options --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScriptOptions:
    """The ``trainer_args`` this runner reads (everything else is ignored here)."""

    metrics_prefix: str | None = None
    stdout_metrics: bool = True
    kill_grace_s: float = 5.0
    timeout_s: float | None = None
    wandb_shim: bool | None = None  # None: auto
    nested_args: str = "json"
    echo: bool = True
    env: dict[str, str] = field(default_factory=dict)


OPTION_KEYS = tuple(ScriptOptions.__dataclass_fields__)


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    raise TrainerError(f"trainer_args.{key}: expected true or false, got {value!r}")


def _seconds(key: str, value: Any, *, allow_none: bool) -> float | None:
    if value is None and allow_none:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = math.nan
    if isinstance(value, bool) or not math.isfinite(out) or out < 0:
        raise TrainerError(f"trainer_args.{key}: expected a number of seconds >= 0, got {value!r}")
    return out


def parse_options(trainer_args: Mapping[str, Any]) -> ScriptOptions:
    """Check the runner's ``trainer_args``; a bad one is a TrainerError that says what to fix."""
    kw: dict[str, Any] = {}
    a = {k: v for k, v in trainer_args.items() if k in OPTION_KEYS}
    if "metrics_prefix" in a:
        prefix = a["metrics_prefix"]
        if prefix is not None and (not isinstance(prefix, str) or not prefix.strip()):
            raise TrainerError(
                f"trainer_args.metrics_prefix: expected a non-empty string like 'HPO:', "
                f"got {prefix!r}"
            )
        kw["metrics_prefix"] = prefix.strip() if prefix else None
    for key in ("stdout_metrics", "echo"):
        if key in a:
            kw[key] = _bool(key, a[key])
    if "kill_grace_s" in a:
        kw["kill_grace_s"] = _seconds("kill_grace_s", a["kill_grace_s"], allow_none=False)
    if "timeout_s" in a:
        kw["timeout_s"] = _seconds("timeout_s", a["timeout_s"], allow_none=True) or None
    if "wandb_shim" in a:
        shim = a["wandb_shim"]
        kw["wandb_shim"] = None if shim in (None, "auto") else _bool("wandb_shim", shim)
    if "nested_args" in a:
        if a["nested_args"] not in ("json", "dotted"):
            raise TrainerError(
                f"trainer_args.nested_args: expected json or dotted, got {a['nested_args']!r}"
            )
        kw["nested_args"] = a["nested_args"]
    if "env" in a:
        env = a["env"]
        if not isinstance(env, Mapping) or not all(isinstance(k, str) for k in env):
            raise TrainerError(f"trainer_args.env: expected a mapping NAME: value, got {env!r}")
        kw["env"] = {k: "" if v is None else str(v) for k, v in env.items()}
    return ScriptOptions(**kw)


# -- the command line -----------------------------------------------------------------------------
def check_command(command: Sequence[str] | None) -> None:
    """Refuse unknown macros and list macros inside a longer element (before anything runs)."""
    for element in command or ():
        if not isinstance(element, str):
            raise TrainerError(f"command: every element must be a string, got {element!r}")
        for m in _TOKEN.finditer(element):
            name = m.group(2)
            if name is None:
                continue
            if name in LIST_MACROS:
                if m.group(0) != element:
                    raise TrainerError(
                        f"command: ${{{name}}} expands to several arguments; put it in an "
                        f"element of its own, not in {element!r}"
                    )
            elif name not in TEXT_MACROS:
                known = ", ".join(f"${{{n}}}" for n in (*LIST_MACROS, *TEXT_MACROS))
                raise TrainerError(
                    f"command: unknown macro ${{{name}}} in {element!r}; known: {known}, "
                    "${envvar:NAME}"
                )


def _text(value: Any) -> str:
    """A parameter value as W&B writes it, except mappings and lists, which are JSON."""
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value)
    return str(value)


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def arg_lists(params: Mapping[str, Any], nested_args: str = "json") -> dict[str, list[str]]:
    """The list macros' expansions for ``params``."""
    flat = _flatten(params) if nested_args == "dotted" else dict(params)
    args, no_equals, no_hyphens, no_bool = [], [], [], []
    for key, value in flat.items():
        text = _text(value)
        args.append(f"--{key}={text}")
        no_equals += [f"--{key}", text]
        no_hyphens.append(f"{key}={text}")
        if isinstance(value, bool):
            if value:
                no_bool.append(f"--{key}")
        else:
            no_bool.append(f"--{key}={text}")
    return {
        "args": args,
        "args_no_equals": no_equals,
        "args_no_hyphens": no_hyphens,
        "args_no_boolean_flags": no_bool,
    }


def build_argv(
    command: Sequence[str] | None,
    *,
    program: str | None,
    params: Mapping[str, Any],
    json_file: str,
    interpreter: str | None = None,
    nested_args: str = "json",
    environ: Mapping[str, str] | None = None,
) -> list[str]:
    """Expand a W&B ``command`` list into the argv to execute (no shell involved)."""
    check_command(command)
    environ = os.environ if environ is None else environ
    lists = arg_lists(params, nested_args)
    env_bin = "/usr/bin/env"
    lists["env"] = [env_bin] if os.path.exists(env_bin) else []
    texts = {
        "interpreter": interpreter or sys.executable,
        "program": program or "",
        "args_json": json.dumps(dict(params)),
        "args_json_file": json_file,
    }

    def expand(m: re.Match[str]) -> str:
        if m.group(2) is not None:
            return texts[m.group(2)]
        name = m.group(1)
        if name not in environ:
            raise TrainerError(
                f"command: ${{envvar:{name}}} needs the environment variable {name}, which is "
                "not set where the trial runs; set it (trainer_args.env works) or remove it"
            )
        return environ[name]

    argv: list[str] = []
    for element in command or DEFAULT_COMMAND:
        whole = _TOKEN.fullmatch(element)
        if whole and whole.group(2) in lists:
            argv += lists[whole.group(2)]
            continue
        argv.append(_TOKEN.sub(expand, element))  # one pass: expanded text is not rescanned
    return argv


# -- the child's environment ----------------------------------------------------------------------
@functools.cache
def _real_wandb_importable() -> bool:
    try:
        return importlib.util.find_spec("wandb") is not None
    except (ImportError, ValueError):
        return False


def use_wandb_shim(option: bool | None, environ: Mapping[str, str] | None = None) -> bool:
    """trainer_args.wandb_shim, else $HPO_WANDB_SHIM, else: shim iff no real wandb here."""
    if option is not None:
        return option
    flag = (os.environ if environ is None else environ).get("HPO_WANDB_SHIM", "").strip().lower()
    if flag in ("1", "true", "yes", "on"):
        return True
    if flag in ("0", "false", "no", "off"):
        return False
    return not _real_wandb_importable()


def _hpo_path_entry(trial_dir: Path) -> str | None:
    """A PYTHONPATH entry that makes ``import hpo`` work in the script when hpo runs from a
    source checkout (not installed): a folder holding only a link to the hpo package."""
    import hpo

    package = Path(hpo.__file__).resolve().parent
    root = str(package.parent)
    dirs = (*site.getsitepackages(), site.getusersitepackages())
    site_dirs = {str(Path(p).resolve()) for p in dirs}
    if root in site_dirs:
        return None
    link_dir = trial_dir / "pythonpath"
    link_dir.mkdir(exist_ok=True)
    try:
        (link_dir / "hpo").symlink_to(package, target_is_directory=True)
    except OSError:
        return root
    return str(link_dir)


def build_env(
    ctx: TrialContext, options: ScriptOptions, *, trial_dir: Path, metrics_file: Path,
    params_file: Path,
) -> tuple[dict[str, str], bool]:
    from hpo.wandb_shim import SHIM_DIR

    env = dict(os.environ)
    env.update(options.env)
    env.update({
        METRICS_FILE_ENV: str(metrics_file),
        PARAMS_FILE_ENV: str(params_file),
        "HPO_TRIAL_NUMBER": str(ctx.number),
        "HPO_SWEEP": str(ctx.sweep),
        "HPO_OBJECTIVE": str(ctx.objective),
        "HPO_TRIAL_DIR": str(trial_dir),
    })
    # pause and resume (hpo.pause): the script keeps its latest state in HPO_CHECKPOINT_DIR
    # (before it reports); a resumed trial finds the paused one's in HPO_RESUME_DIR
    checkpoint = ctx.checkpoint_dir / "program"
    checkpoint.mkdir(parents=True, exist_ok=True)
    env["HPO_CHECKPOINT_DIR"] = str(checkpoint.resolve())
    env.pop("HPO_RESUME_DIR", None)
    if ctx.resume_of is not None:
        root = ctx.checkpoint_dir.parent.parent / f"trial-{ctx.resume_of}" / "checkpoint"
        if (root / "program").is_dir() and any((root / "program").iterdir()):
            env["HPO_RESUME_DIR"] = str((root / "program").resolve())
    env.setdefault("PYTHONUNBUFFERED", "1")
    shim = use_wandb_shim(options.wandb_shim, env)
    path = [SHIM_DIR] if shim else []
    if env.get("PYTHONPATH"):
        path.append(env["PYTHONPATH"])
    extra = _hpo_path_entry(trial_dir)
    if extra:
        path.append(extra)
    if path:
        env["PYTHONPATH"] = os.pathsep.join(path)
    return env, shim


# -- the child process ----------------------------------------------------------------------------
