"""Optuna studies behind sweeps: open the storage, create/load a study, name it, count it.

The study is the coordinator's state (DESIGN.md, "The one idea"): everything that asks, reports
or tells goes through the Optuna storage opened here.
"""

from __future__ import annotations

import logging
from pathlib import Path

import optuna
from optuna.trial import TrialState

from hpo.config import SweepConfig
from hpo.errors import ConfigError, StorageError, StudyNotFound
from hpo.storage_url import engine_kwargs, is_sqlite, mask_url, prepare_sqlite, resolve_url
from hpo.strategy import make_pruner, make_sampler

CONFIG_ATTR = "hpo_config"
RETRIED_ATTR = "hpo_retried"
INTERRUPTED_ATTR = "hpo_interrupted"
RETRY_OF_ATTR = "hpo_retry_of"
GRID_ATTR = "hpo_grid_enqueued"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)

_SEARCH_KEYS = ("method", "metric", "parameters")

optuna.logging.set_verbosity(logging.WARNING)


def open_storage(url: str | None = None) -> optuna.storages.RDBStorage:
    """Open (and create if needed) the Optuna RDB storage behind ``url``."""
    url = resolve_url(url)
    if is_sqlite(url):
        prepare_sqlite(url)
    try:
        return optuna.storages.RDBStorage(
            url, engine_kwargs=engine_kwargs(url), heartbeat_interval=None
        )
    except Exception as exc:  # sqlalchemy OperationalError, psycopg2 errors, version errors
        root = exc.__cause__ or exc  # Optuna wraps the driver's error; show the real one
        msg = str(root).splitlines()[0] if str(root) else type(root).__name__
        raise StorageError(
            f"Cannot open storage {mask_url(url)}: {mask_url(msg)}. Check that the database "
            "is running and the URL (host, port, user, database) is right."
        ) from None


def sweep_name(config: SweepConfig, name: str | None = None) -> str:
    """The study name: --name, else the config's `name`, else the YAML file's stem."""
    if name:
        return name
    if config.name:
        return config.name
    if config.source:
        return Path(config.source).stem
    raise ConfigError("This sweep has no name: pass name=... (or --name), or set `name:` in it.")


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
    return study


def load(name: str, storage: optuna.storages.BaseStorage | str | None = None) -> optuna.Study:
    """Load an existing study with the sampler and pruner its stored config asks for."""
    if storage is None or isinstance(storage, str):
        storage = open_storage(storage)
    try:
        summaries = optuna.get_all_study_names(storage)
    except Exception as exc:
        raise StorageError(f"Cannot list studies: {exc}") from None
    if name not in summaries:
        known = ", ".join(sorted(summaries)) or "none"
        raise StudyNotFound(f"No sweep named {name!r} in this storage (sweeps there: {known}).")
    study = optuna.load_study(study_name=name, storage=storage)
    stored = study.user_attrs.get(CONFIG_ATTR)
    if stored is not None:
        from hpo.config import parse_config

        config = parse_config(stored, source=f"study {name!r}")
        study.sampler = make_sampler(config)
        study.pruner = make_pruner(config)
    return study


def stored_config(study: optuna.Study) -> SweepConfig:
    """The SweepConfig a study was created with."""
    from hpo.config import parse_config

    data = study.user_attrs.get(CONFIG_ATTR)
    if data is None:
        raise StudyNotFound(f"Study {study.study_name!r} was not created by hpo (no config).")
    return parse_config(data, source=f"study {study.study_name!r}")


def counted_trials(study: optuna.Study) -> int:
    """Finished trials that count toward the budget (retried and interrupted ones do not)."""
    n = 0
    for t in study.get_trials(deepcopy=False, states=FINISHED):
        if not t.user_attrs.get(RETRIED_ATTR) and not t.user_attrs.get(INTERRUPTED_ATTR):
            n += 1
    return n


def waiting_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def trial_id(study: optuna.Study, number: int) -> int:
    """Storage id of trial ``number`` (workers rebuild an ``optuna.Trial`` from it)."""
    return study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
