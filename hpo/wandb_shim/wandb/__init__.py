"""hpo's offline stand-in for ``wandb``: a W&B training script runs unchanged under hpo.

hpo puts this package first on a trial script's ``PYTHONPATH`` (see ``hpo.program``).
What works, with W&B's semantics:

* ``wandb.init(config=defaults, ...)`` returns a run; ``run.config`` / ``wandb.config`` hold
  the trial's parameters (attribute and item access, nested parameters as nested dicts that
  also allow attribute access). As in a W&B sweep, ``init(config=...)`` values are defaults:
  sweep parameters win (nested dicts are merged key by key), and later updates of a sweep
  parameter are ignored with a warning. ``config.update()``, ``config.setdefaults()``.
* ``wandb.log(dict, step=None, commit=None)``: numeric values (ints, floats, numpy/torch
  scalars; nested dicts flattened as ``a.b``) go to hpo as one metric event; ``commit=False``
  accumulates into the next committed row. Without ``step`` the step is the number of times
  the sweep's objective has been logged (W&B's iteration count; hyperband counts it).
* ``wandb.summary`` / ``run.summary``: last logged values; assigning a value makes it the
  trial's final value for that metric. ``wandb.finish()``, ``wandb.run``,
  ``with wandb.init() as run:``, ``wandb.agent(sweep_id, function=train)`` (calls ``train``
  once: one script run is one trial), ``wandb.sweep()``, ``wandb.login()``.
* Media and artifacts (``wandb.Image``, ``wandb.Table``, ``wandb.Artifact``, ``wandb.watch``,
  ``wandb.save``, ``wandb.plot.*``, ...) are accepted and ignored.

Not provided: ``wandb.sdk``/``wandb.integration.*`` submodules (Keras/Lightning callbacks),
``wandb.Api``'s data, ``define_metric`` summaries (accepted, ignored).

Self-contained (standard library only): it writes the same JSON lines as
``hpo.script_api`` to ``$HPO_METRICS_FILE`` and reads the parameters from
``$HPO_PARAMS_FILE``. Outside hpo (the variables are unset) logging is a no-op that warns once.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any

__version__ = "0.0.0+hpo.shim"
HPO_SHIM = True

_METRICS_FILE_ENV = "HPO_METRICS_FILE"
_PARAMS_FILE_ENV = "HPO_PARAMS_FILE"

_fd: int | None = None
_warned_offline = False


# -- the wire ---------------------------------------------------------------------------------
def _emit(event: dict[str, Any]) -> None:
    global _fd, _warned_offline
    path = os.environ.get(_METRICS_FILE_ENV)
    if not path:
        if not _warned_offline:
            _warned_offline = True
            warnings.warn(
                "wandb (hpo shim): not running under an hpo sweep ($HPO_METRICS_FILE is unset); "
                "logged metrics are dropped",
                RuntimeWarning,
                stacklevel=3,
            )
        return
    if _fd is None:
        _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(_fd, (json.dumps(event, separators=(",", ":")) + "\n").encode("utf-8"))


def _number(value: Any) -> float | None:
    """A float for numbers and numpy/torch scalars; None for everything else (media, text)."""
    if isinstance(value, bool | str | bytes):
        return None
    if isinstance(value, int | float):
        return float(value)
    if hasattr(value, "__float__"):
        try:
            return float(value)
        except (TypeError, ValueError, RuntimeError):  # multi-element arrays / tensors
            return None
    return None


def _numeric(data: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_numeric(value, name + "."))
            continue
        number = _number(value)
        if number is not None:
            out[name] = number
    return out


def _load_params() -> dict[str, Any]:
    path = os.environ.get(_PARAMS_FILE_ENV)
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        print(f"wandb (hpo shim): cannot read the trial parameters {path}: {exc}", file=sys.stderr)
        return {}
    return data if isinstance(data, dict) else {}


# -- config and summary -----------------------------------------------------------------------
def _wrap(value: Any) -> Any:
    if isinstance(value, Mapping) and not isinstance(value, AttrDict):
        return AttrDict(value)
    return value


class AttrDict(dict):
    """A dict whose keys are also attributes; nested dicts are AttrDicts too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        for key, value in dict(*args, **kwargs).items():
            dict.__setitem__(self, key, _wrap(value))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setitem__(self, key: str, value: Any) -> None:
        dict.__setitem__(self, key, _wrap(value))

    def as_dict(self) -> dict[str, Any]:
        return {k: v.as_dict() if isinstance(v, AttrDict) else v for k, v in self.items()}


def _as_mapping(obj: Any) -> dict[str, Any]:
    """``init(config=...)`` / ``config.update(...)`` accept dicts, argparse Namespaces,
    objects with attributes and YAML file paths, as W&B does."""
    if obj is None:
        return {}
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, str):
        try:
            import yaml  # type: ignore[import-untyped]

            with open(obj, encoding="utf-8") as fh:
                data = yaml.safe_load(fh)
            return dict(data) if isinstance(data, Mapping) else {}
        except Exception as exc:  # noqa: BLE001 - a config file we cannot read is not fatal
            print(f"wandb (hpo shim): ignoring config {obj!r}: {exc}", file=sys.stderr)
            return {}
    if hasattr(obj, "__dict__"):
        return {k: v for k, v in vars(obj).items() if not k.startswith("_")}
    return {}


class Config(AttrDict):
    """``wandb.config``: the trial's parameters. Sweep parameters are locked, as in W&B."""

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        super().__init__(params or {})
        object.__setattr__(self, "_locked", set(self))
        object.__setattr__(self, "_warned", set())

    def _allowed(self, key: str, value: Any) -> bool:
        if key not in self._locked or not dict.__contains__(self, key):
            return True
        if self[key] == _wrap(value):
            return False
        if key not in self._warned:
            self._warned.add(key)
            print(f"wandb (hpo shim): config key {key!r} is set by the sweep "
                  f"({self[key]!r}); ignoring the update to {value!r}", file=sys.stderr)
        return False

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("_locked", "_warned"):
            object.__setattr__(self, name, value)
        else:
            self[name] = value

    def __setitem__(self, key: str, value: Any) -> None:
        if self._allowed(key, value):
            dict.__setitem__(self, key, _wrap(value))

    def update(  # type: ignore[override]
        self, d: Any = None, allow_val_change: bool | None = None, **kwargs: Any
    ) -> None:
        for key, value in {**_as_mapping(d), **kwargs}.items():
            self[key] = value

    def setdefaults(self, d: Any) -> None:
        """Set the keys that are not set yet (nested dicts: key by key)."""
        _fill(self, _as_mapping(d))

    def persist(self) -> None:
        pass

    def _set_defaults_from_init(self, defaults: Mapping[str, Any], exclude: Any, include: Any
                                ) -> None:
        data = dict(defaults)
        if include:
            data = {k: v for k, v in data.items() if k in set(include)}
        if exclude:
            data = {k: v for k, v in data.items() if k not in set(exclude)}
        _fill(self, data)


def _fill(target: dict, defaults: Mapping[str, Any]) -> None:
    for key, value in defaults.items():
        if not dict.__contains__(target, key):
            dict.__setitem__(target, key, _wrap(value))
        elif isinstance(target[key], dict) and isinstance(value, Mapping):
            _fill(target[key], value)


class Summary(AttrDict):
    """``run.summary``: last logged values; assigning sets the trial's final value."""

    def __setitem__(self, key: str, value: Any) -> None:
        dict.__setitem__(self, key, _wrap(value))
        values = _numeric({key: value})
        if values:
            _emit({"summary": values})

    def update(self, d: Any = None, **kwargs: Any) -> None:  # type: ignore[override]
        data = {**_as_mapping(d), **kwargs}
        for key, value in data.items():
            dict.__setitem__(self, key, _wrap(value))
        values = _numeric(data)
        if values:
            _emit({"summary": values})

    def _track(self, values: Mapping[str, float]) -> None:
        for key, value in values.items():
            dict.__setitem__(self, key, value)


# -- ignored things (media, artifacts, plots) ---------------------------------------------------
class _Ignored:
    """Accepts any call, attribute or use as a context manager, and does nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> _Ignored:
        return _Ignored()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Ignored()

    def __enter__(self) -> _Ignored:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def __iter__(self) -> Any:
        return iter(())

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "<ignored by hpo's wandb shim>"


def _ignored_class(name: str) -> type:
    return type(name, (_Ignored,), {"__module__": __name__})


Image = _ignored_class("Image")
Table = _ignored_class("Table")
Histogram = _ignored_class("Histogram")
Video = _ignored_class("Video")
Audio = _ignored_class("Audio")
Html = _ignored_class("Html")
Object3D = _ignored_class("Object3D")
Molecule = _ignored_class("Molecule")
Plotly = _ignored_class("Plotly")
Artifact = _ignored_class("Artifact")
Settings = _ignored_class("Settings")
Api = _ignored_class("Api")
AlertLevel = _ignored_class("AlertLevel")
plot = _Ignored()
plots = _Ignored()


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


watch = unwatch = save = alert = link_model = mark_preempting = require = _noop
setup = teardown = _noop
restore = log_artifact = use_artifact = log_model = use_model = _Ignored()


class Error(Exception):
    """``wandb.Error`` (never raised by the shim)."""


def __getattr__(name: str) -> Any:  # wandb.Molecule, wandb.Graph, ...: accepted, ignored
    if name[:1].isupper():
        cls = _ignored_class(name)
        globals()[name] = cls
        return cls
    raise AttributeError(f"module 'wandb' (hpo's shim) has no attribute {name!r}")


def termlog(string: str = "", *args: Any, **kwargs: Any) -> None:
    print(f"wandb: {string}", file=sys.stderr)


termwarn = termerror = termlog


def login(*args: Any, **kwargs: Any) -> bool:
    return True


# -- the run ---------------------------------------------------------------------------------------
class Run:
    """What ``wandb.init()`` returns; logs to hpo."""

    def __init__(self, init_kwargs: Mapping[str, Any]) -> None:
        number = os.environ.get("HPO_TRIAL_NUMBER", "0")
        sweep_name = os.environ.get("HPO_SWEEP", "standalone")
        self.config = config
        self.summary = summary
        self.id = f"{sweep_name}-{number}"
        self.name = init_kwargs.get("name") or f"trial-{number}"
        self.project = init_kwargs.get("project") or sweep_name
        self.entity = init_kwargs.get("entity")
        self.group = init_kwargs.get("group")
        self.job_type = init_kwargs.get("job_type")
        self.tags = tuple(init_kwargs.get("tags") or ())
        self.notes = init_kwargs.get("notes")
        self.sweep_id = sweep_name
        self.dir = os.environ.get("HPO_TRIAL_DIR") or os.getcwd()
        self.url = None
        self.offline = True
        self.disabled = False
        self.resumed = False
        self.start_time = None
        self._step = 0
        self._pending: dict[str, float] = {}
        self._pending_step: int | None = None
        self._finished = False

    # W&B's history step: rows committed so far (or the last explicit step).
    @property
    def step(self) -> int:
        return self._step

    def log(
        self,
        data: Mapping[str, Any],
        step: int | None = None,
        commit: bool | None = None,
        sync: bool | None = None,
    ) -> None:
        if not isinstance(data, Mapping):
            raise ValueError("wandb.log must be passed a dictionary")
        values = _numeric(data)
        self.summary._track(values)
        if step is not None:
            step = int(step)
            if self._pending and self._pending_step != step:
                self._commit()
            self._pending_step = step
        self._pending.update(values)
        if commit is False:
            return
        self._commit()

    def _commit(self) -> None:
        step = self._pending_step
        if self._pending:
            _emit({"metrics": self._pending, "step": step})
        self._step = step + 1 if step is not None else self._step + 1
        self._pending = {}
        self._pending_step = None

    def finish(self, exit_code: int | None = None, quiet: bool | None = None) -> None:
        global run
        if self._finished:
            return
        self._finished = True
        if self._pending:
            self._commit()
        if run is self:
            run = None

    def define_metric(self, name: str, *args: Any, **kwargs: Any) -> _Ignored:
        return _Ignored()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> bool:
        self.finish(exit_code=1 if exc_type else 0)
        return False

    def __getattr__(self, name: str) -> Any:  # watch, save, log_artifact, alert, ...
        if name.startswith("__"):
            raise AttributeError(name)
        return _Ignored()

    def __repr__(self) -> str:
        return f"<hpo wandb shim Run {self.id}>"


config: Config = Config(_load_params())
summary: Summary = Summary()
run: Run | None = None


def init(*args: Any, **kwargs: Any) -> Run:
    """Start (or return the current) run. Nothing is sent anywhere but to hpo."""
    global run
    if run is not None and not run._finished:
        return run
    config._set_defaults_from_init(
        _as_mapping(kwargs.get("config")),
        kwargs.get("config_exclude_keys"),
        kwargs.get("config_include_keys"),
    )
    run = Run(kwargs)
    atexit.register(run.finish)
    if os.environ.get(_METRICS_FILE_ENV):
        print(f"wandb: hpo's offline wandb shim: logging to hpo trial "
              f"{os.environ.get('HPO_TRIAL_NUMBER', '?')}; nothing is sent to W&B",
              file=sys.stderr)
    return run


def log(
    data: Mapping[str, Any],
    step: int | None = None,
    commit: bool | None = None,
    sync: bool | None = None,
) -> None:
    """``wandb.log``: numeric values become one metric event for hpo's pruner."""
    (run or init()).log(data, step=step, commit=commit, sync=sync)


def finish(exit_code: int | None = None, quiet: bool | None = None) -> None:
    if run is not None:
        run.finish(exit_code=exit_code, quiet=quiet)


def define_metric(name: str, *args: Any, **kwargs: Any) -> _Ignored:
    return _Ignored()


def sweep(sweep: Any = None, *args: Any, **kwargs: Any) -> str:
    """Inside an hpo trial the sweep already exists: returns its name."""
    return os.environ.get("HPO_SWEEP", "hpo-sweep")


def agent(
    sweep_id: Any = None,
    function: Callable[[], Any] | None = None,
    entity: Any = None,
    project: Any = None,
    count: int | None = None,
) -> None:
    """One script run is one hpo trial: calls ``function`` once with this trial's config."""
    if function is not None:
        function()
        finish()


__all__ = [
    "AttrDict",
    "Config",
    "Error",
    "Run",
    "Summary",
    "agent",
    "config",
    "define_metric",
    "finish",
    "init",
    "log",
    "login",
    "run",
    "summary",
    "sweep",
]
