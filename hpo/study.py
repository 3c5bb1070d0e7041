"""Optuna studies behind sweeps: open the storage, create/load a study, name it, count it.

The study is the coordinator's state (DESIGN.md, "The one idea"): everything that asks, reports
or tells goes through the Optuna storage opened here: Optuna's ``JournalStorage`` over the
sweep's journal in the tracking database (hpo.tracking.journal), one journal per sweep.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Container
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from hpo.config import SweepConfig
from hpo.errors import ConfigError, StudyNotFound
from hpo.storage_url import resolve_url
from hpo.strategy import make_pruner, make_sampler

if TYPE_CHECKING:
    from hpo.tracking import TrackingStore

CONFIG_ATTR = "hpo_config"
RESUME_OF_ATTR = "hpo_resume_of"  # hpo.pause: the paused trial a trial continues
RETRIED_ATTR = "hpo_retried"
INTERRUPTED_ATTR = "hpo_interrupted"
RETRY_OF_ATTR = "hpo_retry_of"
GRID_ATTR = "hpo_grid_enqueued"
ATTEMPT_ATTR = "hpo_attempt"
RUN_STARTED_ATTR = "hpo_run_started"  # time.time() of the latest `hpo sweep` start
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
_ASKED = (TrialState.RUNNING, *FINISHED)

_SEARCH_KEYS = ("method", "metric", "parameters")

optuna.logging.set_verbosity(logging.WARNING)


def open_storage(
    url: str | None, name: str, tracking: TrackingStore | None = None
) -> optuna.storages.JournalStorage:
    """Open the Optuna storage of sweep ``name`` (created on first write) in database ``url``.

    Pass the process's ``tracking`` store to share its connection pool.
    """
    from optuna.storages import JournalStorage

    from hpo.tracking import TrackingStore
    from hpo.tracking.journal import SQLJournalBackend

    store = tracking if tracking is not None else TrackingStore(resolve_url(url))
    return JournalStorage(SQLJournalBackend(store, name))  # errors: StorageError, URL masked


def sweep_name(config: SweepConfig, name: str | None = None) -> str:
    """The study name: --name, else the config's `name`, else its W&B `project:`, else the
    YAML file's stem plus a short hash of its `method`, `metric` and `parameters`
    (``sweep-3f2a1c``), so that two files both called ``sweep.yaml`` do not share a sweep.

    The hash covers what a resumed sweep must keep (hpo.study.create_or_load refuses a change
    there), so editing the budget or ``parallel`` keeps the name and resumes. A sweep stored
    under the bare stem in the config's storage (named before the hash was added) keeps the
    stem, so it still resumes; that look-up only reads (a missing SQLite file stays missing).
    """
    if name:
        return name
    if config.name:
        return config.name
    if not config.source:
        raise ConfigError(
            "This sweep has no name: pass name=... (or --name), or set `name:` in it.")
    stem = Path(config.source).stem
    if config.source.startswith("<"):  # a dict, not a file: no file content to hash
        return stem
    import hashlib
    import json

    import yaml

    try:
        data = yaml.safe_load(config.text) if config.text else None
    except yaml.YAMLError:
        data = None
    if not isinstance(data, dict):
        data = config.to_dict()
    project = data.get("project")
    if isinstance(project, str) and project.strip() and not any(
            c in "/\\" or not c.isprintable() for c in project):
        return project.strip()
    search = json.dumps({k: data.get(k) for k in _SEARCH_KEYS}, sort_keys=True, default=str)
    hashed = f"{stem}-{hashlib.sha256(search.encode()).hexdigest()[:6]}"
    return stem if _stored_sweep(resolve_url(config.storage), stem) else hashed


def _stored_sweep(url: str, name: str) -> bool:
    """Whether the database at ``url`` holds a sweep called ``name``. Only reads: no table or
    SQLite file is created; an unreachable or unreadable database counts as no."""
    import sqlalchemy as sa

    from hpo.storage_url import is_sqlite, mask_url, sqlite_path
    from hpo.tracking import schema

    try:
        if is_sqlite(url):
            path = sqlite_path(url)
            if path is None or not path.is_file():
                return False
            engine = sa.create_engine(url, poolclass=sa.pool.NullPool,
                                      connect_args={"timeout": 10})
        else:
            psycopg2 = sa.engine.make_url(url).drivername.endswith("psycopg2")
            engine = sa.create_engine(url, poolclass=sa.pool.NullPool,
                                      connect_args={"connect_timeout": 5} if psycopg2 else {})
        try:
            with engine.connect() as conn:
                if not sa.inspect(conn).has_table(schema.sweeps.name):
                    return False
                found = conn.scalar(sa.select(schema.sweeps.c.id)
                                    .where(schema.sweeps.c.name == name))
                return found is not None
        finally:
            engine.dispose()
    except Exception as exc:  # noqa: BLE001 - opening it for the sweep will say what is wrong
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        logging.getLogger("hpo").warning(
            "could not check whether sweep %r exists in %s (%s); naming the sweep from the "
            "file's content", name, mask_url(url), mask_url(first))
        return False


def create_or_load(
    config: SweepConfig, name: str, storage: optuna.storages.BaseStorage
) -> optuna.Study:
    """Create the study, or load it to resume. Refuses to resume with another search space."""
    direction = "maximize" if config.metric.goal == "maximize" else "minimize"
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=make_sampler(config),
        pruner=make_pruner(config),
        direction=direction,
        load_if_exists=True,
    )
    stored = study.user_attrs.get(CONFIG_ATTR)
    new = config.to_dict()
    if stored is None:
        study.set_user_attr(CONFIG_ATTR, new)
    else:
        changed = [k for k in _SEARCH_KEYS if stored.get(k) != new.get(k)]
        if changed:
            raise ConfigError(
                f"Sweep {name!r} already exists in this storage with a different "
                f"{', '.join(changed)}. Resume it with the same file, or start a new sweep "
                "with --name NEW_NAME."
            )
        if study.direction.name.lower() != direction:
            raise ConfigError(f"Sweep {name!r} exists with goal {study.direction.name.lower()}.")
        study.set_user_attr(CONFIG_ATTR, new)  # budget/parallel/backend may change on resume
    import time

    study.set_user_attr(RUN_STARTED_ATTR, time.time())  # budget.minutes counts from here
    return study


def load(name: str, storage: optuna.storages.BaseStorage | str | None = None) -> optuna.Study:
    """Load an existing study with the sampler and pruner its stored config asks for."""
    if storage is None or isinstance(storage, str):
        storage = open_storage(storage, name)
    if name not in optuna.get_all_study_names(storage):
        known = _known_sweeps(storage)
        raise StudyNotFound(f"No sweep named {name!r} in this storage (sweeps there: {known}).")
    study = optuna.load_study(study_name=name, storage=storage)
    stored = study.user_attrs.get(CONFIG_ATTR)
    if stored is not None:
        from hpo.config import parse_config

        config = parse_config(stored, source=f"study {name!r}")
        study.sampler = make_sampler(config)
        study.pruner = make_pruner(config)
    return study


def _known_sweeps(storage: optuna.storages.BaseStorage) -> str:
    backend = getattr(storage, "_backend", None)
    store = getattr(backend, "store", None)
    if store is None:
        return "unknown"
    return ", ".join(sorted(s.name for s in store.list_sweeps())) or "none"


def stored_config(study: optuna.Study) -> SweepConfig:
    """The SweepConfig a study was created with."""
    from hpo.config import parse_config

    data = study.user_attrs.get(CONFIG_ATTR)
    if data is None:
        raise StudyNotFound(f"Study {study.study_name!r} was not created by hpo (no config).")
    return parse_config(data, source=f"study {study.study_name!r}")


def counted_trials(study: optuna.Study, *, running: bool = False) -> int:
    """Trials that count toward the budget: finished ones (and, with ``running``, running
    ones), except those retried or interrupted (their re-queued copy counts instead) and
    resumed ones (hpo.pause: the configuration counted when it first ran)."""
    n = 0
    for t in study.get_trials(deepcopy=False, states=_ASKED if running else FINISHED):
        if not t.user_attrs.get(RETRIED_ATTR) and not t.user_attrs.get(INTERRUPTED_ATTR) \
                and RESUME_OF_ATTR not in t.user_attrs:
            n += 1
    return n


def running_trials(study: optuna.Study) -> dict[int, optuna.trial.FrozenTrial]:
    """The study's RUNNING trials by number."""
    return {t.number: t
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}


def waiting_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def trial_id(study: optuna.Study, number: int) -> int:
    """Storage id of trial ``number`` (workers rebuild an ``optuna.Trial`` from it)."""
    return study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)


# -- the only place that touches Optuna's private attributes --------------------------------
def ask_id(trial: optuna.trial.Trial) -> int:
    """Storage id of a trial just asked."""
    return trial._trial_id


def get_trial(study: optuna.Study, tid: int) -> optuna.trial.FrozenTrial:
    """Trial ``tid`` as this process's replica of the journal has it now (synced first)."""
    return study._storage.get_trial(tid)


class _LaggingReads:
    """A JournalStorage seen through its replica: trial lists are read from the database at
    most every ``max_age_s`` (writes and everything else go to the storage itself)."""

    def __init__(self, storage: optuna.storages.JournalStorage, max_age_s: float) -> None:
        self._storage, self._max_age_s, self._synced = storage, max_age_s, -math.inf

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list:
        storage = self._storage
        with storage._thread_lock:
            if time.monotonic() - self._synced >= self._max_age_s:
                storage._sync_with_backend()
                self._synced = time.monotonic()
            trials = storage._replay_result.get_all_trials(study_id, states)
            return copy.deepcopy(trials) if deepcopy else trials

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)


def lagging_view(study: optuna.Study, max_age_s: float) -> optuna.Study:
    """``study`` for a pruner that may see other trials up to ``max_age_s`` late: its trial
    lists come from this process's replica, read from the database at most that often.
    (Not for Hyperband: it builds studies of its own from the storage.)"""
    storage = study._storage
    if max_age_s <= 0 or not isinstance(storage, optuna.storages.JournalStorage):
        return study
    view = copy.copy(study)
    view._storage = _LaggingReads(storage, max_age_s)  # type: ignore[assignment]
    return view


def start_copy(study: optuna.Study, source: optuna.trial.FrozenTrial,
               user_attrs: dict[str, Any]) -> optuna.trial.Trial:
    """A new RUNNING trial with ``source``'s parameters and ``user_attrs``, created directly
    (not queued: a queued trial would wait behind every trial queued before it)."""
    from optuna.trial import create_trial

    template = create_trial(state=TrialState.RUNNING, params=source.params,
                            distributions=source.distributions, user_attrs=user_attrs)
    tid = study._storage.create_new_trial(study._study_id, template_trial=template)
    return optuna.trial.Trial(study, tid)


def own_trial(study: optuna.Study, tid: int) -> optuna.trial.FrozenTrial:
    """Trial ``tid`` as this process's replica has it, without reading the database: right
    for a trial this process runs (only its runner writes its values and attributes)."""
    storage = study._storage
    if isinstance(storage, optuna.storages.JournalStorage):
        with storage._thread_lock:
            return storage._replay_result.get_trial(tid)
    return storage.get_trial(tid)


def set_intermediates(study: optuna.Study, tid: int, values: dict[int, float]) -> None:
    """Write trial ``tid``'s intermediate values (step -> value) as one append to the journal.

    What ``Trial.report`` writes, one journal line a step, without its cache (a write rolled
    back with its transaction can be written again) and without a read per step.
    """
    from optuna.storages.journal._storage import JournalOperation

    if not values:
        return
    storage = study._storage
    if not isinstance(storage, optuna.storages.JournalStorage):
        for step, value in values.items():
            storage.set_trial_intermediate_value(tid, step, value)
        return
    with storage._thread_lock:
        worker = storage._replay_result.worker_id
        storage._backend.append_logs([
            {"op_code": JournalOperation.SET_TRIAL_INTERMEDIATE_VALUE, "worker_id": worker,
             "trial_id": tid, "step": step, "intermediate_value": value}
            for step, value in values.items()])
        storage._sync_with_backend()


def set_trial_attr(study: optuna.Study, tid: int, key: str, value: object) -> None:
    """Set a user attr of trial ``tid`` (running trials only)."""
    study._storage.set_trial_user_attr(tid, key, value)


def store_of(study: optuna.Study) -> TrackingStore | None:
    """The tracking store whose database holds ``study``'s journal (None: another storage)."""
    backend = getattr(study._storage, "_backend", None)
    return getattr(backend, "store", None)


def reset_replay(study: optuna.Study) -> None:
    """Forget this process's replica of the journal; the next access replays it from the
    database. Call after a transaction that wrote journal lines was rolled back: the replica
    may hold lines that were never committed."""
    from optuna.storages.journal._storage import JournalStorageReplayResult

    storage = study._storage
    lock = getattr(storage, "_thread_lock", None)
    if lock is None or not hasattr(storage, "_replay_result"):
        return
    with lock:
        storage._replay_result = JournalStorageReplayResult(storage._worker_id_prefix)
    reset = getattr(study.sampler, "reset", None)
    if callable(reset):
        reset()  # samplers that memoize views of the study (hpo.history)
