"""Run a program trial: the process group, its output, its metrics (see hpo.program)."""

from __future__ import annotations

import codecs
import functools
import json
import os
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo.errors import TrainerError, TrialPruned
from hpo.program.command import (
    DEFAULT_COMMAND,
    OPTION_KEYS,
    ScriptFailed,
    ScriptOptions,
    _real_wandb_importable,
    arg_lists,
    build_argv,
    build_env,
    check_command,
    parse_options,
)
from hpo.program.wire import parse_event, parse_stdout_line

if TYPE_CHECKING:
    from hpo.config import SweepConfig
    from hpo.trial import TrialContext

TAIL_BYTES = 4096
_LINE_LIMIT = 1 << 20  # a stdout "line" longer than this is passed through unparsed
_POLL_S = 0.05


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
        if kind == "max_step":
            if step is not None:
                self.ctx.set_max_step(step)
            return
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
    program: str | None,
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
        return _run(argv, ctx, options, workdir, env, metrics_file, program or argv[0], shim)
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
    if ctx.objective is not None and ctx.objective not in final:
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
    if not config.program and not config.command:
        raise TrainerError("a program sweep needs `program:` (the training script) or "
                           "`command:`")
    if not config.program and any("${program}" in c for c in config.command or ()):
        raise TrainerError("command: uses ${program} but the sweep names no `program:`; add "
                           "it, or write the script into the command")
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
