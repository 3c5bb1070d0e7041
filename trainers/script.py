"""Run a user's unmodified training script as a trial (W&B ``program`` / ``command`` sweeps).

``hpo.trainer_ref.resolve`` hands program sweeps :func:`run_program` (bound to the sweep's
``program`` and ``command``), so the script runs the same way in the coordinator's process, a
local worker process, a Ray actor or a Kubernetes agent: as a subprocess of whoever runs the
trial, in the current working directory (the sweep's).

The command line
    W&B's command list and macros, expanded into an argv list (no shell, nothing to quote):
    ``${env}`` (``/usr/bin/env``), ``${interpreter}`` (this worker's ``sys.executable``, so
    the script runs in hpo's virtualenv; W&B uses ``python``), ``${program}``, ``${args}``
    (``--key=value``), ``${args_no_equals}`` (``--key value``), ``${args_no_hyphens}``
    (``key=value``), ``${args_no_boolean_flags}`` (``--flag`` when true, nothing when false),
    ``${args_json}`` (one JSON argument), ``${args_json_file}`` (path of a JSON file with the
    parameters), ``${envvar:NAME}`` (anywhere in an element). Default command:
    ``${env} ${interpreter} ${program} ${args}``. Values are written as W&B writes them
    (``str()``: ``True``, ``0.001``, ``None``) except nested parameters and lists, which are
    JSON (``--optimizer={"lr": 0.01, "momentum": 0.9}``; W&B writes Python's ``repr``, which
    nothing parses portably). ``trainer_args.nested_args: dotted`` flattens nested parameters
    into ``--optimizer.lr=0.01`` instead (Hydra/jsonargparse style; ``${args_json}`` and
    ``${args_json_file}`` always hold the nested JSON).

Metrics: one path
    Whatever the script reports becomes a metric event, and this process (the parent) calls
    ``ctx.report(metrics, step)`` for each, so the sweep's pruner decides. Events come from
    ``hpo.report({...}, step=...)`` (``hpo.script_api``, a JSON-lines file named by
    ``$HPO_METRICS_FILE``), from ``wandb.log`` (the shim in ``hpo/wandb_shim``, same file) and
    from JSON lines on the script's stdout (``{"eval_loss": 0.3, "step": 100}``; with
    ``trainer_args.metrics_prefix: "HPO:"`` only lines that start with the prefix). An event
    without a step is given the number of times the objective has been reported so far
    (W&B's iteration count, what ``hyperband``'s ``min_iter`` counts).

Pruning and failures
    When ``ctx.report`` raises ``TrialPruned`` the script's process group gets SIGTERM, then
    SIGKILL after ``trainer_args.kill_grace_s`` (default 5 s), and ``TrialPruned`` is raised
    again: the trial ends PRUNED. A non-zero exit raises :class:`ScriptFailed` with the exit
    code and the stderr tail; exit 0 without ever reporting the objective raises it naming the
    metric and the ones that were seen. Failed and pruned trials keep ``exit_code``,
    ``stdout_tail``, ``stderr_tail`` (last 4 KB each) and ``command`` in their attrs. The
    result is the last value of every metric (``wandb.summary[...] = x`` overrides it).

``import wandb`` in the script gets hpo's shim when ``$HPO_WANDB_SHIM=1`` or
``trainer_args.wandb_shim: true``, or, by default, when the real ``wandb`` is not importable
here; ``$HPO_WANDB_SHIM=0`` / ``wandb_shim: false`` never use it. With the real wandb the
script logs to W&B and hpo sees only ``hpo.report`` and stdout metrics.

``trainer_args`` read here: ``metrics_prefix`` (str), ``stdout_metrics`` (bool, default
true), ``kill_grace_s`` (5), ``timeout_s`` (none), ``wandb_shim`` (auto|true|false),
``nested_args`` (json|dotted), ``echo`` (pass the script's output through to this process's
stdout/stderr; default true), ``env`` (extra environment variables). Other trainer_args are
not passed to the script: its arguments are the sweep's parameters, as in W&B.

The script also gets ``HPO_TRIAL_NUMBER``, ``HPO_SWEEP``, ``HPO_OBJECTIVE``, ``HPO_TRIAL_DIR``
(a scratch directory removed after the trial), ``HPO_PARAMS_FILE`` and ``PYTHONUNBUFFERED=1``.
POSIX only (process groups).
"""

from __future__ import annotations

import codecs
import functools
import importlib.util
import json
import math
import os
import queue
import re
import shlex
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo.errors import HpoError, TrainerError, TrialPruned
from hpo.script_api import METRICS_FILE_ENV, PARAMS_FILE_ENV

if TYPE_CHECKING:
    from hpo.config import SweepConfig
    from hpo.trial import TrialContext

DEFAULT_COMMAND = ("${env}", "${interpreter}", "${program}", "${args}")
#: Macros that expand to several argv elements: they must be a whole element.
LIST_MACROS = ("args", "args_no_equals", "args_no_hyphens", "args_no_boolean_flags", "env")
#: Macros that expand to one string: a whole element, or part of one (hpo extension).
TEXT_MACROS = ("interpreter", "program", "args_json", "args_json_file")
#: ``${envvar:NAME}`` (group 1) or ``${macro}`` (group 2).
_TOKEN = re.compile(r"\$\{(?:envvar:([A-Za-z_][A-Za-z0-9_]*)|([A-Za-z_]+))\}")

TAIL_BYTES = 4096
_LINE_LIMIT = 1 << 20  # a stdout "line" longer than this is passed through unparsed
_POLL_S = 0.05


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
    program: str,
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
        "program": program,
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
def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _child_setup(parent: int) -> None:  # runs in the child between fork and exec
    try:  # local workers ignore Ctrl-C; the script should not inherit that
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except (ValueError, OSError):
        pass
    if _PRCTL is not None:  # the worker dies (killed, OOM) -> the script gets SIGTERM
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def terminate_group(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM the script's process group; SIGKILL what is left after ``grace_s``."""
    pgid = proc.pid
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        proc.wait()
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if proc.poll() is not None and not _group_alive(pgid):
            return
        time.sleep(0.02)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


# -- reading the script ---------------------------------------------------------------------------
class _Tail:
    def __init__(self, limit: int = TAIL_BYTES) -> None:
        self.limit = limit
        self.buf = bytearray()
        self.lock = threading.Lock()

    def add(self, chunk: bytes) -> None:
        with self.lock:
            self.buf += chunk
            if len(self.buf) > 4 * self.limit:
                del self.buf[: len(self.buf) - self.limit]

    def text(self) -> str:
        with self.lock:
            data = bytes(self.buf[-self.limit:])
        return data.decode("utf-8", errors="replace")


def _numeric(data: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_numeric(value, name + "."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def _step_of(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and (not math.isfinite(value) or value != int(value)):
        return None
    return int(value)


def parse_stdout_line(line: str, prefix: str | None) -> tuple[dict[str, float], int | None] | None:
    """A metric event from one stdout line, or None when the line is not one.

    Without a prefix: a JSON object with at least one number. With one: the text after the
    prefix. ``"step"`` (a whole number) is the step; non-numeric values are ignored.
    """
    text = line.strip()
    if prefix is not None:
        if not text.startswith(prefix):
            return None
        text = text[len(prefix):].strip()
    if not (text.startswith("{") and text.endswith("}")):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    step = _step_of(data.pop("step", None))
    metrics = _numeric(data)
    return (metrics, step) if metrics else None


def parse_event(line: bytes) -> tuple[str, dict[str, float], int | None] | None:
    """One line of the metrics file -> ("metrics" | "summary", values, step)."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("metrics"), Mapping):
        return "metrics", _numeric(data["metrics"]), _step_of(data.get("step"))
    if isinstance(data.get("summary"), Mapping):
        return "summary", _numeric(data["summary"]), None
    return None


class _Watch:
    """Follows a running script: stdout/stderr reader threads, the metrics file, tails."""

    def __init__(self, proc: subprocess.Popen[bytes], metrics_file: Path,
                 options: ScriptOptions) -> None:
        self.proc = proc
        self.options = options
        self.events: queue.Queue[tuple[str, dict[str, float], int | None]] = queue.Queue()
        self.stdout_tail = _Tail()
        self.stderr_tail = _Tail()
        self._file = open(metrics_file, "rb")  # noqa: SIM115 - closed in close()
        self._partial = b""
        assert proc.stdout is not None and proc.stderr is not None
        self.threads = [
            threading.Thread(target=self._pump_stdout, args=(proc.stdout,), daemon=True,
                             name=f"hpo-script-stdout-{proc.pid}"),
            threading.Thread(target=self._pump_stderr, args=(proc.stderr,), daemon=True,
                             name=f"hpo-script-stderr-{proc.pid}"),
        ]
        for t in self.threads:
            t.start()

    # reader threads ---------------------------------------------------------------------------
    def _echo(self, text: str, stream_name: str) -> None:
        if not self.options.echo or not text:
            return
        stream = getattr(sys, stream_name, None)
        if stream is None:
            return
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):  # closed or broken: keep reading the script anyway
            pass

    def _line(self, raw: bytes) -> None:
        line = raw.decode("utf-8", errors="replace")
        if self.options.stdout_metrics:
            event = parse_stdout_line(line, self.options.metrics_prefix)
            if event is not None:
                self.events.put(("metrics", event[0], event[1]))
                return
        self._echo(line + "\n", "stdout")

    def _pump_stdout(self, stream: Any) -> None:
        fd = stream.fileno()
        buf = b""
        try:
            while chunk := os.read(fd, 65536):
                self.stdout_tail.add(chunk)
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for raw in lines:
                    self._line(raw.rstrip(b"\r"))
                if len(buf) > _LINE_LIMIT:
                    self._echo(buf.decode("utf-8", errors="replace"), "stdout")
                    buf = b""
            if buf:
                self._line(buf.rstrip(b"\r"))
        except OSError:
            pass

    def _pump_stderr(self, stream: Any) -> None:
        fd = stream.fileno()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            while chunk := os.read(fd, 65536):
                self.stderr_tail.add(chunk)
                self._echo(decoder.decode(chunk), "stderr")
            self._echo(decoder.decode(b"", final=True), "stderr")
        except OSError:
            pass

    # the metrics file ------------------------------------------------------------------------
    def read_file(self) -> list[tuple[str, dict[str, float], int | None]]:
        data = self._file.read()
        if not data:
            return []
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        out = []
        for line in lines:
            event = parse_event(line) if line.strip() else None
            if event is not None:
                out.append(event)
        return out

    def readers_done(self, timeout: float = 0.0) -> bool:
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self.threads)

    def close(self) -> None:
        self._file.close()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None and not any(t.is_alive() for t in self.threads):
                stream.close()


# -- one trial ------------------------------------------------------------------------------------
class _Metrics:
    """Feeds events to ``ctx.report`` with W&B's step rule; keeps the last value of each."""

    def __init__(self, ctx: TrialContext) -> None:
        self.ctx = ctx
        self.count = 0  # how many times the objective was reported
        self.last: dict[str, float] = {}
        self.summary: dict[str, float] = {}
        self.events = 0

    def handle(self, kind: str, values: dict[str, float], step: int | None) -> None:
        if not values:
            return
        if kind == "summary":
            self.summary.update(values)
            return
        if self.ctx.objective in values:
            self.count += 1
        if step is None:
            step = self.count
        self.events += 1
        self.last.update(values)
        self.ctx.report(values, step)  # raises TrialPruned when the pruner says stop

    def final(self) -> dict[str, float]:
        return {**self.last, **self.summary}


def _split_params(params: Mapping[str, Any], ctx: TrialContext) -> tuple[dict, dict]:
    """(the script's parameters, the runner's trainer_args). The sweep passes
    ``{**trainer_args, **params}``; ``ctx.params`` are the sampled parameters."""
    sampled = ctx.params
    if sampled:
        script = {k: v for k, v in params.items() if k in sampled}
        rest = {k: v for k, v in params.items() if k not in sampled}
    else:
        script = {k: v for k, v in params.items() if k not in OPTION_KEYS}
        rest = {k: v for k, v in params.items() if k in OPTION_KEYS}
    return script, rest


def _exit_text(code: int | None) -> str:
    if code is None:
        return "no exit code"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def run_program(
    params: dict[str, Any],
    ctx: TrialContext,
    *,
    program: str,
    command: list[str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> dict[str, float]:
    """Run the sweep's script for one trial; returns the last value of every metric.

    ``params`` are the trial's parameters (plus trainer_args, see module doc). Raises
    ``TrialPruned`` after stopping the script when the pruner says stop, and
    :class:`ScriptFailed` when it exits non-zero, times out or never reports ``ctx.objective``.
    """
    script_params, trainer_args = _split_params(params, ctx)
    options = parse_options(trainer_args)
    workdir = Path(cwd) if cwd is not None else Path.cwd()
    trial_dir = Path(tempfile.mkdtemp(prefix=f"hpo-trial-{ctx.number}-"))
    try:
        params_file = trial_dir / "params.json"
        params_file.write_text(json.dumps(script_params), encoding="utf-8")
        metrics_file = trial_dir / "metrics.jsonl"
        metrics_file.touch()
        env, shim = build_env(ctx, options, trial_dir=trial_dir, metrics_file=metrics_file,
                              params_file=params_file)
        argv = build_argv(
            command, program=program, params=script_params, json_file=str(params_file),
            nested_args=options.nested_args, environ=env,
        )
        return _run(argv, ctx, options, workdir, env, metrics_file, program, shim)
    finally:
        shutil.rmtree(trial_dir, ignore_errors=True)


def _run(
    argv: list[str], ctx: TrialContext, options: ScriptOptions, workdir: Path,
    env: dict[str, str], metrics_file: Path, program: str, shim: bool,
) -> dict[str, float]:
    shown = shlex.join(argv)
    try:
        proc = subprocess.Popen(
            argv, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True,
            preexec_fn=functools.partial(_child_setup, os.getpid()),
        )
    except OSError as exc:
        raise ScriptFailed(
            f"cannot start the trial's command ({exc.strerror or exc}): {shown} (in {workdir})"
        ) from None
    watch = _Watch(proc, metrics_file, options)
    metrics = _Metrics(ctx)
    started = time.monotonic()

    def attrs(**extra: Any) -> None:
        ctx.set_attrs(
            exit_code=proc.returncode, command=shown, stdout_tail=watch.stdout_tail.text(),
            stderr_tail=watch.stderr_tail.text(), **extra,
        )

    def drain_all() -> None:
        while True:
            try:
                metrics.handle(*watch.events.get_nowait())
            except queue.Empty:
                break
        for event in watch.read_file():
            metrics.handle(*event)

    stopped = False
    try:
        exited_at: float | None = None
        while True:
            for event in watch.read_file():
                metrics.handle(*event)
            try:
                metrics.handle(*watch.events.get(timeout=_POLL_S))
            except queue.Empty:
                pass
            if proc.poll() is not None:
                exited_at = exited_at or time.monotonic()
                # output still in the pipes is read at once; a leftover child holding them
                # open must not keep the trial running
                if watch.readers_done(0.0) or time.monotonic() - exited_at > 2.0:
                    drain_all()
                    break
            elif options.timeout_s and time.monotonic() - started > options.timeout_s:
                terminate_group(proc, options.kill_grace_s)
                stopped = True
                watch.readers_done(2.0)
                attrs()
                raise ScriptFailed(
                    f"{program!r} ran longer than trainer_args.timeout_s={options.timeout_s:g}; "
                    f"stopped ({_exit_text(proc.returncode)}). Command: {shown}\n"
                    f"stderr tail:\n{watch.stderr_tail.text()}"
                )
    except TrialPruned:
        terminate_group(proc, options.kill_grace_s)
        stopped = True
        watch.readers_done(2.0)
        attrs(pruned_at_step=ctx.last_step)
        raise
    finally:
        if not stopped and proc.poll() is None:  # Ctrl-C, a storage error, ...: never orphan it
            terminate_group(proc, options.kill_grace_s)
        elif not stopped and _group_alive(proc.pid):  # the script left children behind
            terminate_group(proc, min(options.kill_grace_s, 1.0))
        watch.close()

    code = proc.returncode
    if code != 0:
        attrs()
        hint = ""
        if not (workdir / program).exists() and not Path(program).is_absolute():
            hint = f" (note: {program!r} does not exist in {workdir})"
        raise ScriptFailed(
            f"{program!r} failed ({_exit_text(code)}){hint}. Command: {shown}\n"
            f"stderr tail:\n{watch.stderr_tail.text()}"
        )
    final = metrics.final()
    if ctx.objective not in final:
        attrs()
        seen = sorted(final)
        listed = ", ".join(seen[:30]) + (f", ... ({len(seen)} in all)" if len(seen) > 30 else "")
        hints = [
            "report it with hpo.report({...}), wandb.log({...}) or a JSON line on stdout",
        ]
        if options.metrics_prefix:
            hints.append(f"stdout lines count only with the prefix {options.metrics_prefix!r}")
        if not shim and _real_wandb_importable():
            hints.append(
                "the script's `import wandb` got the real wandb package, so wandb.log went to "
                "W&B, not hpo; set HPO_WANDB_SHIM=1 or trainer_args.wandb_shim: true"
            )
        raise ScriptFailed(
            f"{program!r} exited 0 but never reported the objective metric "
            f"{ctx.objective!r}; it reported: {listed or 'nothing'}. " + "; ".join(hints) + "."
        )
    return final


# -- wiring ---------------------------------------------------------------------------------------
def script_trainer(config: SweepConfig) -> Callable[..., dict[str, float]]:
    """The trainer for a ``program:`` sweep, checked before anything runs:
    ``functools.partial(run_program, program=..., command=...)``."""
    if not config.program:
        raise TrainerError("a program sweep needs `program:` (the training script)")
    check_command(config.command)
    parse_options({k: v for k, v in config.trainer_args.items() if k in OPTION_KEYS})
    return functools.partial(run_program, program=config.program, command=config.command)


__all__ = [
    "DEFAULT_COMMAND",
    "ScriptFailed",
    "ScriptOptions",
    "arg_lists",
    "build_argv",
    "check_command",
    "parse_options",
    "parse_stdout_line",
    "run_program",
    "script_trainer",
    "terminate_group",
]
