"""Run a user's unmodified training script as a trial (W&B ``program`` / ``command`` sweeps).

Modules: ``wire`` (the format shared with ``hpo.script_api``), ``command`` (argv, environment,
runner options), ``runner`` (the process group, its output and metrics).

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
(a scratch directory removed after the trial), ``HPO_PARAMS_FILE``, ``PYTHONUNBUFFERED=1``,
and for pause and resume (hpo.pause) ``HPO_CHECKPOINT_DIR`` (keep the latest training state
there, written before each report) and, in a resumed trial, ``HPO_RESUME_DIR`` (the paused
trial's state to continue from).
POSIX only (process groups).
"""

from hpo.program.command import ScriptFailed, ScriptOptions, build_argv, parse_options
from hpo.program.runner import run_program, script_trainer

__all__ = ["ScriptFailed", "ScriptOptions", "build_argv", "parse_options", "run_program",
           "script_trainer"]
