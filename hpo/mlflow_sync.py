"""Mirror a sweep from hpo's tracking database into MLflow (the ``mlflow`` extra).

Everything a sweep records (trials, per-step metrics, states, errors, workers) is in the
tracking database whatever the placement (in-process, worker processes, Ray, agents), so
MLflow is fed from there: :func:`sync_sweep` makes MLflow match the database, and
:class:`MlflowMirror` calls it every few seconds while a sweep runs and once at its end.

What MLflow gets, all through ``MlflowClient`` with explicit run ids (no active-run state):

* one parent run per sweep (tags ``hpo.sweep``, ``hpo.kind=sweep``): the config, sampler and
  pruner as params and tags, the config as ``sweep_config.json``, the trial counts and best
  trial as tags, ``best_<objective>`` as a metric, and a status that follows the sweep
  (running -> RUNNING, finished -> FINISHED, failed -> FAILED, interrupted -> KILLED);
* one nested child run per trial (tags ``mlflow.parentRunId``, ``hpo.trial``): params,
  every metric the trainer reported with its step and time, the final metrics, the state as
  tag ``hpo.state`` and as the run status (complete -> FINISHED, failed -> FAILED, pruned and
  interrupted -> KILLED, running -> RUNNING), the error (tag ``hpo.error``, the full text as
  ``error.txt``), worker, device, host and the trial's attrs (``hpo.attr.*``);
* at the end, the best trial's saved model directory (its ``artifact_path`` attr, or
  ``artifacts/NAME/trial-N``) as the artifact ``model`` of its run and, with ``register``, a
  version of that registered model in the MLflow Model Registry.

Idempotent: runs are found again by their tags, so re-running adds nothing twice. Each
run's tag ``hpo.synced`` records how far its metric history was logged (the last step and
the metric names logged at it); only newer points are sent, in the same ``log_batch`` as
the tag. Runs two syncers created at once for the same trial are merged: the oldest is
kept, the others deleted.

MLflow being down never fails a trial: the mirror counts a failed sync, says so once, and
the next sync catches up (nothing is lost: the database holds it all); what could not be
sent by the end is reported, with the command that sends it later (``hpo mlflow NAME``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import posixpath
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hpo.errors import HpoError
from hpo.storage_url import mask_url

log = logging.getLogger("hpo.mlflow")

INSTALL_HINT = "pip install 'hpo[mlflow]'"
#: trial state -> MLflow run status
RUN_STATUS = {
    "running": "RUNNING", "complete": "FINISHED", "failed": "FAILED", "pruned": "KILLED",
    "interrupted": "KILLED", "paused": "KILLED",
}
#: sweep status -> MLflow status of the parent run
SWEEP_RUN_STATUS = {
    "running": "RUNNING", "finished": "FINISHED", "failed": "FAILED", "interrupted": "KILLED",
}
ARTIFACT_PATH = "model"
DEFAULT_INTERVAL_S = 5.0

_SWEEP, _KIND, _TRIAL, _STATE = "hpo.sweep", "hpo.kind", "hpo.trial", "hpo.state"
_SYNCED, _FINAL, _ARTIFACT = "hpo.synced", "hpo.final_synced", "hpo.artifact"
_PARENT, _NOTE = "mlflow.parentRunId", "mlflow.note.content"
_MAX_BATCH = 1000  # entities per log_batch (MLflow's limit)
_MAX_TAGS = 100  # params or tags per log_batch
_PARAM_LEN, _TAG_LEN, _KEY_LEN = 6000, 8000, 250  # MLflow's limits on values and keys


class MlflowError(HpoError):
    """MLflow is missing, unreachable or refused a request; the message says what to do."""


# ------------------------------------------------------------------------------- results


@dataclass
class SyncReport:
    """What one :func:`sync_sweep` did."""

    sweep: str
    tracking_uri: str  # masked
    experiment: str
    experiment_id: str | None = None
    parent_run_id: str | None = None
    runs_created: int = 0
    runs_updated: int = 0
    metrics_logged: int = 0
    duplicates_removed: int = 0
    artifact: str | None = None  # runs:/RUN/model of the best trial
    model_version: str | None = None  # "NAME/VERSION" in the Model Registry
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        """One line for the CLI and logs."""
        text = (f"MLflow {self.tracking_uri}: sweep {self.sweep!r} -> experiment "
                f"{self.experiment!r}, parent run {self.parent_run_id}; "
                f"{self.runs_created} runs created, {self.runs_updated} updated, "
                f"{self.metrics_logged} metric points logged")
        if self.duplicates_removed:
            text += f", {self.duplicates_removed} duplicate runs removed"
        if self.artifact:
            text += f"; best model {self.artifact}"
        if self.model_version:
            text += f", registered as {self.model_version}"
        return text + "".join(f"; {n}" for n in self.notes)


@dataclass
class MirrorSummary:
    """How a :class:`MlflowMirror` went: syncs that worked, failed or were skipped."""

    sweep: str
    tracking_uri: str  # masked
    syncs_ok: int = 0
    syncs_failed: int = 0
    final_ok: bool = False
    last_error: str | None = None
    final: SyncReport | None = None  # the last sync that worked
    total: SyncReport | None = None  # counts summed over every sync that worked

    def add(self, report: SyncReport) -> None:
        """Count one sync that worked."""
        self.syncs_ok += 1
        self.final = report
        if self.total is None:
            self.total = SyncReport(report.sweep, report.tracking_uri, report.experiment)
        total = self.total
        for key in ("runs_created", "runs_updated", "metrics_logged", "duplicates_removed"):
            setattr(total, key, getattr(total, key) + getattr(report, key))
        total.seconds += report.seconds
        for key in ("experiment_id", "parent_run_id", "artifact", "model_version", "notes"):
            setattr(total, key, getattr(report, key))

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (for ``SweepResult.extra['mlflow']``)."""
        out = asdict(self)
        out["message"] = self.message()
        return out

    def message(self) -> str:
        """What happened, and what to run if MLflow missed anything."""
        if self.final_ok and self.total is not None:
            text = f"{self.total.summary()} (in {self.syncs_ok} syncs)"
            if self.syncs_failed:
                text += f"; {self.syncs_failed} syncs had failed (caught up since)"
            return text
        return (f"MLflow {self.tracking_uri} was skipped: {self.syncs_failed} of "
                f"{self.syncs_ok + self.syncs_failed} syncs failed (last error: "
                f"{self.last_error}); the trials are unaffected and all in hpo's database; "
                f"send them later with: hpo mlflow {self.sweep} --tracking-uri "
                f"{self.tracking_uri}")


# ------------------------------------------------------------------------------- helpers


def require_mlflow() -> Any:
    """The ``mlflow`` module, or an :class:`MlflowError` naming the extra to install."""
    try:
        import mlflow
        from mlflow.tracking import MlflowClient  # noqa: F401 - fails on a broken install
    except ImportError as exc:
        raise MlflowError(f"MLflow support needs the mlflow package ({exc}); install it "
                          f"with: {INSTALL_HINT}") from None
    return mlflow


def unreachable(tracking_uri: str, timeout_s: float = 3.0) -> str | None:
    """Why an http(s) tracking server cannot be reached (a TCP connect), or None.

    Other URIs (``sqlite:///``, a folder, ``databricks``) and setups behind an HTTP proxy
    are not probed. This answers in seconds, where MLflow's own client retries for minutes.
    """
    parts = urlsplit(tracking_uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY",
                                       "http_proxy")):
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return f"bad port in {mask_url(tracking_uri)}"
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout_s).close()
    except OSError as exc:
        return f"cannot connect to {parts.hostname}:{port} ({exc.strerror or exc})"
    return None


def _ms(value: datetime | None) -> int | None:
    return int(value.timestamp() * 1000) if value is not None else None


def _text(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _tail(text: str, limit: int) -> str:
    """The end of a long text (a traceback's last lines say what went wrong)."""
    return text if len(text) <= limit else "..." + text[-(limit - 3):]


def _key(name: str) -> str:
    """An MLflow metric/param key: letters, digits, ``_ - . space / :`` (others -> ``_``)."""
    out = "".join(c if c.isalnum() or c in "_-. /:" else "_" for c in str(name))
    out = out.strip()[:_KEY_LEN] or "_"
    if posixpath.normpath(out) != out or out.startswith(("/", "..")) or out == ".":
        out = "_" + out.replace("/", "_")  # MLflow refuses keys that are odd paths
    return out


def _float(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number


def _flat(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flat(value, name + "."))
        else:
            out[name] = value
    return out


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i: i + size]


def _quoted(value: str) -> str | None:
    """``value`` as a string literal of MLflow's search syntax (None when it holds both
    quote characters)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    return None


def _marker(run: Any) -> tuple[int, set[str]]:
    """(last step logged, metric names logged at it) from a run's ``hpo.synced`` tag."""
    try:
        data = json.loads(run.data.tags.get(_SYNCED, ""))
        return int(data["step"]), set(data["names"])
    except (ValueError, TypeError, KeyError):
        return -(2**62), set()


# ------------------------------------------------------------------------------- the sync


def sqlite_lock_path(tracking_uri: str) -> Path | None:
    """``<database>.hpo-lock`` for a ``sqlite:///`` tracking URI (None for anything else)."""
    if not tracking_uri.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(tracking_uri).database
    if not database or database == ":memory:":
        return None
    return Path(database + ".hpo-lock")


def open_client(tracking_uri: str) -> Any:
    """An MlflowClient for ``tracking_uri``.

    MLflow creates and migrates its tables when a process first opens a database backend.
    On SQLite those migrations are not atomic: two processes doing it at once (agents of a
    sweep starting together) leave the database half-migrated, unusable for every later
    client. So on a ``sqlite:///`` URI the client is opened under an exclusive lock on
    ``<database>.hpo-lock``, and the processes migrate one after the other. (A tracking
    server migrates once for all; PostgreSQL runs the DDL in transactions.)
    """
    from mlflow.tracking import MlflowClient

    lock = sqlite_lock_path(tracking_uri)
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        lock = None
    if lock is None:
        return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        # the constructor opens the tracking store, which creates or migrates the tables
        return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    finally:
        os.close(fd)  # closing the only descriptor releases the lock


class _Syncer:
    """One MLflow client and experiment for one sweep; :meth:`sync` makes MLflow match the
    tracking database. Reused by the mirror (the experiment id is looked up once)."""

    def __init__(self, store: Any, sweep: str, tracking_uri: str, experiment: str | None,
                 register: str | None, artifact_root: str | os.PathLike[str] | None) -> None:
        require_mlflow()
        self.store, self.sweep, self.uri = store, sweep, tracking_uri
        self.experiment = experiment or sweep
        self.register = register
        self.artifact_root = Path(artifact_root) if artifact_root else Path("artifacts")
        self.client = open_client(tracking_uri)
        self.experiment_id: str | None = None

    # -- lookups ---------------------------------------------------------------------------
    def _experiment_id(self) -> str:
        if self.experiment_id is not None:
            return self.experiment_id
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is None:
            try:
                exp_id = self.client.create_experiment(self.experiment,
                                                       tags={_SWEEP: self.sweep})
            except MlflowException:  # another syncer created it just now
                exp = self.client.get_experiment_by_name(self.experiment)
                if exp is None:
                    raise
                exp_id = exp.experiment_id
        elif exp.lifecycle_stage == "deleted":
            raise MlflowError(
                f"the MLflow experiment {self.experiment!r} is deleted; restore it "
                f"(mlflow experiments restore --experiment-id {exp.experiment_id}) or choose "
                "another name (--experiment / mlflow.experiment)")
        else:
            exp_id = exp.experiment_id
        self.experiment_id = str(exp_id)
        return self.experiment_id

    def _runs(self, exp_id: str) -> list[Any]:
        literal = _quoted(self.sweep)
        where = f"tags.`{_SWEEP}` = {literal}" if literal else f"tags.`{_KIND}` != ''"
        runs, token = [], None
        while True:
            page = self.client.search_runs([exp_id], filter_string=where, max_results=1000,
                                           page_token=token)
            runs += [r for r in page if r.data.tags.get(_SWEEP) == self.sweep]
            token = page.token
            if not token:
                return runs

    def _dedupe(self, runs: list[Any], report: SyncReport) -> Any:
        """The oldest of runs made for the same thing; the others are deleted."""
        runs = sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))
        for extra in runs[1:]:
            self.client.delete_run(extra.info.run_id)
            report.duplicates_removed += 1
        return runs[0]

    @staticmethod
    def _try(report: SyncReport, what: str, fn: Any) -> bool:
        """Run an artifact upload; a failure (no credentials for the artifact store, a full
        disk) becomes a note, so the runs and metrics are still synced."""
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - MlflowException, OSError, boto errors, ...
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            report.notes.append(f"could not {what}: {type(exc).__name__}: {first}")
            return False
        return True

    # -- the sync --------------------------------------------------------------------------
    def sync(self, *, final: bool = False) -> SyncReport:
        started = time.monotonic()
        report = SyncReport(self.sweep, mask_url(self.uri), self.experiment)
        why = unreachable(self.uri)
        if why:
            raise MlflowError(f"MLflow at {mask_url(self.uri)} is unreachable: {why}; start "
                              "the tracking server or fix the tracking URI")
        record = self.store.get_sweep(self.sweep)
        trials = self.store.trials(self.sweep)
        exp_id = report.experiment_id = self._experiment_id()
        parents, children = [], {}
        for run in self._runs(exp_id):
            kind = run.data.tags.get(_KIND)
            if kind == "sweep":
                parents.append(run)
            elif kind == "trial" and run.data.tags.get(_TRIAL, "").isdigit():
                children.setdefault(int(run.data.tags[_TRIAL]), []).append(run)
        parent = (self._dedupe(parents, report) if parents
                  else self._create_parent(exp_id, record, report))
        parent_id = report.parent_run_id = parent.info.run_id
        runs = {n: self._dedupe(rs, report) for n, rs in children.items()}
        finished = final or record.status != "running"
        stale = [t for t in trials if self._needs_metrics(t, runs.get(t.number))]
        history: dict[int, list[Any]] = {t.number: [] for t in stale}
        if stale:
            for row in self.store.metrics(self.sweep, numbers=[t.number for t in stale]):
                history.setdefault(row.number, []).append(row)
        for trial in trials:
            run = runs.get(trial.number)
            if run is None:
                run = runs[trial.number] = self._create_child(exp_id, parent_id, trial)
                report.runs_created += 1
            changed = self._sync_trial(trial, run, parent_id, history.get(trial.number),
                                       record.objective, report)
            report.runs_updated += changed
        if finished:
            self._best_model(trials, runs, parent, record, report)
            if parents and parent.info.status != SWEEP_RUN_STATUS.get(record.status):  # resumed
                self._try(report, "log sweep_config.json", lambda: self.client.log_dict(
                    parent_id, record.to_dict(), "sweep_config.json"))
        self._sync_parent(parent, record, trials, report)
        report.seconds = time.monotonic() - started
        return report

    def _create_parent(self, exp_id: str, record: Any, report: SyncReport) -> Any:
        from hpo.space import SearchSpace

        config = dict(record.config or {})
        sampler = None
        try:
            from hpo.config import parse_config
            from hpo.strategy import describe

            sampler = describe(parse_config(config, source="<tracking database>"))["sampler"]
        except Exception:  # noqa: BLE001 - an older or foreign config: leave the sampler out
            pass
        tags = {
            _SWEEP: self.sweep, _KIND: "sweep",
            "hpo.method": record.method, "hpo.objective": record.objective,
            "hpo.goal": record.goal, "hpo.pruner": record.pruner, "hpo.sampler": sampler,
            "hpo.storage": record.storage, "hpo.host": record.host,
            "mlflow.source.git.commit": record.git_commit,
            "mlflow.source.name": "hpo", "mlflow.source.type": "JOB",
        }
        run = self.client.create_run(
            exp_id, start_time=_ms(record.started), run_name=self.sweep,
            tags={k: _text(v, _TAG_LEN) for k, v in tags.items() if v is not None},
        )
        params: dict[str, Any] = {
            "method": record.method, "objective": record.objective, "goal": record.goal,
            "sampler": sampler, "pruner": record.pruner,
        }
        for key in ("backend", "parallel", "seed", "trainer", "program", "command",
                    "max_retries", "timeout", "run_cap", "early_terminate"):
            if config.get(key) is not None:
                params[key] = config[key]
        for key, value in (config.get("budget") or {}).items():
            params[f"budget.{key}"] = value
        for key, value in SearchSpace.flatten(config.get("trainer_args") or {}).items():
            params[f"trainer_args.{key}"] = value
        for key, spec in _flat_space(config.get("parameters") or {}).items():
            params[f"space.{key}"] = spec
        from mlflow.entities import Param

        items = [Param(_key(k), _text(v, _PARAM_LEN)) for k, v in params.items()
                 if v is not None]
        for chunk in _chunks(items, _MAX_TAGS):
            self.client.log_batch(run.info.run_id, params=chunk)
        self._try(report, "log sweep_config.json", lambda: self.client.log_dict(
            run.info.run_id, record.to_dict(), "sweep_config.json"))
        if record.config_yaml:
            self._try(report, "log sweep.yaml", lambda: self.client.log_text(
                run.info.run_id, record.config_yaml, "sweep.yaml"))
        report.runs_created += 1
        return self.client.get_run(run.info.run_id)

    def _create_child(self, exp_id: str, parent_id: str, trial: Any) -> Any:
        tags = {_PARENT: parent_id, _SWEEP: self.sweep, _KIND: "trial",
                _TRIAL: str(trial.number)}
        return self.client.create_run(exp_id, start_time=_ms(trial.started),
                                      run_name=f"trial-{trial.number}", tags=tags)

    @staticmethod
    def _needs_metrics(trial: Any, run: Any) -> bool:
        """Whether the trial's metric rows must be read: new steps, or a finished trial whose
        run has not had its last points and final metrics yet."""
        if run is None:
            return True
        step, _ = _marker(run)
        if trial.steps is not None and trial.steps > step:
            return True
        return trial.state != "running" and run.data.tags.get(_FINAL) != "1"

    def _sync_trial(self, trial: Any, run: Any, parent_id: str, rows: list[Any] | None,
                    objective: str | None, report: SyncReport) -> bool:
        """Bring one child run up to date; True when anything was sent."""
        from mlflow.entities import Metric

        have = run.data.tags
        tags: dict[str, str] = {}
        want = {
            _PARENT: parent_id, _STATE: trial.state, "hpo.worker": trial.worker,
            "hpo.device": trial.device, "hpo.host": trial.host, "hpo.pid": trial.pid,
            "hpo.value": trial.value, "hpo.duration_s": trial.duration_s,
            "hpo.retry_of": trial.retry_of,
        }
        if trial.error:
            want["hpo.error"] = _tail(trial.error, _TAG_LEN)
            want[_NOTE] = _tail(trial.error, _TAG_LEN)
        for key, value in _flat(trial.attrs or {}).items():
            want[_key(f"hpo.attr.{key}")] = value
        for key, value in want.items():
            if value is None:
                continue
            text = _text(value, _TAG_LEN)
            if have.get(key) != text:
                tags[key] = text
        from mlflow.entities import Param

        from hpo.space import SearchSpace

        params = [Param(_key(k), _text(v, _PARAM_LEN))  # a param never changes in MLflow
                  for k, v in SearchSpace.flatten(trial.params or {}).items()
                  if _key(k) not in run.data.params]
        metrics: list[Any] = []
        markers: list[str] = []  # the hpo.synced value after each metric in `metrics`
        if rows is not None:
            step, names = _marker(run)
            new = sorted((r for r in rows if r.step > step or (r.step == step
                          and r.name not in names)), key=lambda r: (r.step, r.name))
            for r in new:
                if r.step != step:
                    step, names = r.step, set()
                names.add(r.name)
                metrics.append(Metric(_key(r.name), _float(r.value),
                                      _ms(r.logged_at) or int(time.time() * 1000), r.step))
                markers.append(json.dumps({"step": step, "names": sorted(names)}))
            if trial.state != "running" and have.get(_FINAL) != "1":
                finals = self._finals(trial, rows, objective)
                for name, value, at in finals:
                    metrics.append(Metric(_key(name), value, _ms(trial.ended)
                                          or int(time.time() * 1000), at))
                    markers.append(markers[-1] if markers else have.get(_SYNCED, ""))
                tags[_FINAL] = "1"
        self._send(run.info.run_id, metrics, markers, tags, params)
        report.metrics_logged += len(metrics)
        status = RUN_STATUS.get(trial.state, "RUNNING")
        if run.info.status != status:
            self._set_status(run.info.run_id, status, _ms(trial.ended))
            if trial.error and status == "FAILED":
                self._try(report, f"log error.txt of trial {trial.number}",
                          lambda: self.client.log_text(run.info.run_id, trial.error,
                                                       "error.txt"))
        return bool(metrics or tags or params or run.info.status != status)

    @staticmethod
    def _finals(trial: Any, rows: list[Any], objective: str | None
                ) -> list[tuple[str, float, int]]:
        """Final metrics not already the last point of their history: (name, value, step)."""
        last: dict[str, tuple[int, float | None]] = {}
        for r in rows:
            if r.name not in last or r.step >= last[r.name][0]:
                last[r.name] = (r.step, r.value)
        finals = dict(trial.metrics or {})
        if objective and trial.value is not None and objective not in finals:
            finals[objective] = trial.value
        out = []
        for name, value in finals.items():
            number = _float(value)
            step, seen = last.get(name, (trial.steps or 0, None))
            if name in last and (seen == number if seen is not None else math.isnan(number)):
                continue  # already the last point of its history (NaN is stored as None)
            out.append((name, number, max(step, trial.steps or 0)))
        return out

    def _send(self, run_id: str, metrics: list[Any], markers: list[str],
              tags: dict[str, str], params: list[Any]) -> None:
        """``log_batch`` in MLflow-sized batches (usually one). Each batch carries the
        ``hpo.synced`` marker of its last metric, so a sync cut short resumes after what was
        really logged; ``hpo.final_synced`` rides in the last batch."""
        from mlflow.entities import RunTag

        final = tags.pop(_FINAL, None)
        metric_chunks = list(_chunks(list(range(len(metrics))), _MAX_BATCH - 2 * _MAX_TAGS))
        param_chunks = list(_chunks(params, _MAX_TAGS))
        tag_chunks = list(_chunks([RunTag(k, v) for k, v in tags.items()], _MAX_TAGS - 2))
        count = max(len(metric_chunks), len(param_chunks), len(tag_chunks),
                    1 if final else 0)
        for i in range(count):
            index = metric_chunks[i] if i < len(metric_chunks) else []
            batch_tags = list(tag_chunks[i]) if i < len(tag_chunks) else []
            if index and markers[index[-1]]:
                batch_tags.append(RunTag(_SYNCED, markers[index[-1]]))
            if final and i == count - 1:
                batch_tags.append(RunTag(_FINAL, final))
            self.client.log_batch(run_id, metrics=[metrics[j] for j in index],
                                  params=param_chunks[i] if i < len(param_chunks) else [],
                                  tags=batch_tags)

    def _best_model(self, trials: list[Any], runs: dict[int, Any], parent: Any, record: Any,
                    report: SyncReport) -> None:
        """Log the best trial's saved model dir on its run and register it (once each)."""
        best = self.store.best(self.sweep)
        if best is None:
            report.notes.append("no complete trial: no best model")
            return
        run = runs.get(best.number)
        if run is None:
            return
        run_id = run.info.run_id
        self.client.set_tag(parent.info.run_id, "hpo.best_run_id", run_id)
        if run.data.tags.get(_ARTIFACT) != ARTIFACT_PATH:
            folder = self._model_dir(best)
            if folder is None:
                report.notes.append(
                    f"no model to log: best trial {best.number} has no artifact_path attr and "
                    f"no {self.artifact_root / self.sweep / f'trial-{best.number}'}")
                return
            if not self._try(report, f"log the model of trial {best.number} from {folder}",
                             lambda: self.client.log_artifacts(run_id, str(folder),
                                                               ARTIFACT_PATH)):
                return
            self.client.set_tag(run_id, _ARTIFACT, ARTIFACT_PATH)
        report.artifact = f"runs:/{run_id}/{ARTIFACT_PATH}"
        if self.register:
            report.model_version = self._register(run_id, best.number)

    def _model_dir(self, best: Any) -> Path | None:
        candidates = []
        if best.attrs.get("artifact_path"):
            candidates.append(Path(str(best.attrs["artifact_path"])))
        candidates.append(self.artifact_root / self.sweep / f"trial-{best.number}")
        for path in candidates:
            if path.is_dir() and any(path.iterdir()):
                return path
        return None

    def _register(self, run_id: str, number: int) -> str:
        from mlflow.exceptions import MlflowException

        name = self.register
        assert name is not None
        literal = _quoted(name)
        if literal is None:
            raise MlflowError(f"registered model name {name!r} holds both quote characters; "
                              "choose another name")
        for mv in self.client.search_model_versions(
                f"name = {literal} and run_id = '{run_id}'"):
            return f"{name}/{mv.version}"
        try:
            self.client.create_registered_model(name, tags={_SWEEP: self.sweep})
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        uri = self.client.get_run(run_id).info.artifact_uri
        mv = self.client.create_model_version(
            name, source=f"{uri}/{ARTIFACT_PATH}", run_id=run_id,
            tags={_SWEEP: self.sweep, _TRIAL: str(number)},
            description=f"best trial {number} of hpo sweep {self.sweep!r}",
        )
        return f"{name}/{mv.version}"

    def _sync_parent(self, parent: Any, record: Any, trials: list[Any],
                     report: SyncReport) -> None:
        from mlflow.entities import Metric, RunTag

        have = parent.data.tags
        counts: dict[str, int] = {}
        for t in trials:
            counts[t.state] = counts.get(t.state, 0) + 1
        want = {f"hpo.trials.{state}": str(n) for state, n in counts.items()}
        want["hpo.trials"] = str(len(trials))
        want["hpo.status"] = record.status
        best = self.store.best(self.sweep)
        metrics = []
        if best is not None:
            want["hpo.best_trial"] = str(best.number)
            want["hpo.best_value"] = json.dumps(best.value)
            if have.get("hpo.best_trial") != want["hpo.best_trial"] or \
                    have.get("hpo.best_value") != want["hpo.best_value"]:
                done = sum(1 for t in trials if t.state != "running")
                metrics.append(Metric(_key(f"best_{record.objective}"), _float(best.value),
                                      int(time.time() * 1000), done))
        tags = [RunTag(k, v) for k, v in want.items() if have.get(k) != v]
        if tags or metrics:
            self.client.log_batch(parent.info.run_id, metrics=metrics, tags=tags)
        status = SWEEP_RUN_STATUS.get(record.status, "RUNNING")
        if parent.info.status != status:
            self._set_status(parent.info.run_id, status, _ms(record.ended))

    def _set_status(self, run_id: str, status: str, end_time: int | None) -> None:
        """A run's status (and end time when it ended). What ``set_terminated`` does, minus
        the "View run at" link it prints for every run on an http(s) server (one per trial)
        and the extra request that link costs; ``set_terminated`` if MLflow's store changed."""
        if status == "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
            return
        store = getattr(getattr(self.client, "_tracking_client", None), "store", None)
        if callable(getattr(store, "update_run_info", None)):
            from mlflow.entities import RunStatus

            store.update_run_info(run_id, run_status=RunStatus.from_string(status),
                                  end_time=end_time or int(time.time() * 1000), run_name=None)
        else:
            self.client.set_terminated(run_id, status, end_time=end_time)


def _flat_space(parameters: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``parameters:`` -> {dotted name: its distribution spec} (nested parameters joined)."""
    out: dict[str, Any] = {}
    for name, spec in parameters.items():
        if isinstance(spec, Mapping) and isinstance(spec.get("parameters"), Mapping):
            out.update(_flat_space(spec["parameters"], f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = spec
    return out


def _open_store(store: Any) -> Any:
    if isinstance(store, str):
        from hpo.tracking import TrackingStore

        return TrackingStore(store)
    return store


def sync_sweep(
    store: Any,
    sweep: str,
    tracking_uri: str,
    experiment: str | None = None,
    register: str | None = None,
    *,
    final: bool | None = None,
    artifact_root: str | os.PathLike[str] | None = None,
) -> SyncReport:
    """Make MLflow at ``tracking_uri`` match sweep ``sweep`` of ``store`` (a TrackingStore or
    its URL); safe to repeat: runs are found again by their tags and only new metric points
    are sent.

    ``experiment`` defaults to the sweep name. The best trial's model is logged (and, with
    ``register``, registered) once the sweep has ended, or when ``final`` is true.
    ``artifact_root`` is where ``NAME/trial-N`` model folders are looked for (default
    ``./artifacts``). Raises :class:`MlflowError` when MLflow is missing or unreachable.
    """
    syncer = _Syncer(_open_store(store), sweep, tracking_uri, experiment, register,
                     artifact_root)
    return syncer.sync(final=bool(final))


class MlflowMirror:
    """Keep MLflow in step with a running sweep: a background thread that syncs every
    ``interval_s`` seconds, and once more at :meth:`stop`. MLflow errors never reach the
    sweep: they are counted, logged once, and reported by :meth:`stop`."""

    def __init__(
        self,
        store: Any,
        sweep: str,
        tracking_uri: str,
        experiment: str | None = None,
        register: str | None = None,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        artifact_root: str | os.PathLike[str] | None = None,
        shared: bool = False,
    ) -> None:
        """``shared``: one of several processes that run the sweep (agents): periodic syncs
        take turns through the database (one process per interval), and stopping this one
        syncs once more without ending the sweep in MLflow (the sweep's own status decides:
        the last agent out finds it ended and logs the best model)."""
        require_mlflow()
        self._store_arg = store
        self.sweep, self.tracking_uri = sweep, tracking_uri
        self.experiment, self.register = experiment, register
        self.interval_s = interval_s
        self.artifact_root = artifact_root
        self.summary = MirrorSummary(sweep, mask_url(tracking_uri))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._syncer: _Syncer | None = None
        self._warned = False
        self.shared = shared

    def start(self) -> MlflowMirror:
        """Start syncing in the background (the first sync starts at once)."""
        self._thread = threading.Thread(target=self._loop, name=f"hpo-mlflow-{self.sweep}",
                                        daemon=True)
        self._thread.start()
        return self

    def _my_turn(self) -> bool:
        if not self.shared:
            return True
        try:
            if self._syncer is None:
                self._syncer = _Syncer(_open_store(self._store_arg), self.sweep,
                                       self.tracking_uri, self.experiment, self.register,
                                       self.artifact_root)
            return bool(self._syncer.store.take_turn(f"mlflow:{self.sweep}",
                                                     self.interval_s * 0.9))
        except Exception:  # noqa: BLE001 - the database is down: the loop rides it out
            log.debug("no MLflow turn: the database did not answer", exc_info=True)
            return False

    def _loop(self) -> None:
        while True:
            if self._my_turn():
                self.sync_once()
            if self._stop.wait(self.interval_s):
                break
        self.summary.final_ok = self.sync_once(final=not self.shared)
        if self._syncer is not None and isinstance(self._store_arg, str):
            self._syncer.store.close()  # the store this thread opened

    def sync_once(self, final: bool = False) -> bool:
        """One sync; False (and the error counted and logged) when it failed."""
        try:
            if self._syncer is None:
                self._syncer = _Syncer(_open_store(self._store_arg), self.sweep,
                                       self.tracking_uri, self.experiment, self.register,
                                       self.artifact_root)
            report = self._syncer.sync(final=final)
        except Exception as exc:  # noqa: BLE001 - MLflow trouble must never reach trials
            self.summary.syncs_failed += 1
            self.summary.last_error = mask_url(str(exc).strip().splitlines()[0][:300]
                                               if str(exc).strip() else type(exc).__name__)
            if not self._warned:
                self._warned = True
                log.warning("MLflow sync of sweep %r failed (%s); trials go on, and hpo "
                            "retries every %.0fs", self.sweep, self.summary.last_error,
                            self.interval_s)
            else:
                log.debug("MLflow sync failed again", exc_info=True)
            return False
        self.summary.add(report)
        return True

    def stop(self, timeout_s: float = 120.0) -> MirrorSummary:
        """Stop the thread after one last sync (waiting up to ``timeout_s``); the summary
        is logged: a warning when MLflow missed anything."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                self.summary.final_ok = False
                self.summary.last_error = (f"the last sync was still running after "
                                           f"{timeout_s:.0f}s")
        if self.summary.final_ok:
            log.info("%s", self.summary.message())
        else:
            log.warning("%s", self.summary.message())
        return self.summary


def start_mirror(url: str, sweep: str, spec: Any, *, interval_s: float | None = None,
                 shared: bool = False) -> MlflowMirror | None:
    """The running mirror for a sweep whose config has ``mlflow:`` (``spec``), else None;
    it syncs every ``interval_s`` seconds (default :data:`DEFAULT_INTERVAL_S`); ``shared``
    for an agent, one of several (see :class:`MlflowMirror`)."""
    if spec is None:
        return None
    return MlflowMirror(url, sweep, spec.tracking_uri, spec.experiment, spec.register,
                        interval_s=interval_s or DEFAULT_INTERVAL_S, shared=shared).start()


def follow_sweep(
    store: Any,
    sweep: str,
    tracking_uri: str,
    experiment: str | None = None,
    register: str | None = None,
    *,
    interval_s: float = DEFAULT_INTERVAL_S,
) -> MirrorSummary:
    """Mirror a sweep run elsewhere (agents) until it ends or Ctrl-C, then sync once more."""
    store = _open_store(store)
    mirror = MlflowMirror(store, sweep, tracking_uri, experiment, register,
                          interval_s=interval_s)
    try:
        while True:
            mirror.sync_once()
            if store.get_sweep(sweep).status != "running":
                break
            time.sleep(interval_s)
    except KeyboardInterrupt:
        pass
    mirror.summary.final_ok = mirror.sync_once(final=True)
    return mirror.summary


__all__ = [
    "INSTALL_HINT", "MirrorSummary", "MlflowError", "MlflowMirror", "SyncReport",
    "follow_sweep", "require_mlflow", "start_mirror", "sync_sweep", "unreachable",
]
