"""Shared pytest fixtures.

Storage
-------
- ``sqlite_url``: a fresh SQLite file under ``tmp_path`` (``sqlite:////abs/path/hpo.db``).
- ``postgres_url``: a fresh schema ``hpo_t_<hex>`` in the PostgreSQL database of
  ``$HPO_TEST_POSTGRES_URL`` (default ``postgresql+psycopg2://postgres@127.0.0.1:5432/test``);
  the URL carries ``?options=-csearch_path=<schema>`` so SQLAlchemy, the tracking store and
  ``optuna.storages.RDBStorage`` all work inside it. Dropped (CASCADE) afterwards. Skipped when
  PostgreSQL is unreachable, except under ``$CI`` where that is a failure.
- ``storage_url``: parametrized over ``sqlite`` and ``postgres`` (the latter marked
  ``postgres``; deselect with ``-m 'not postgres'``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pytest

DEFAULT_TEST_POSTGRES_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


# -- storage ------------------------------------------------------------------------------------
def _postgres_base_url() -> str:
    from hpo.storage_url import resolve_url

    return resolve_url(os.environ.get("HPO_TEST_POSTGRES_URL") or DEFAULT_TEST_POSTGRES_URL)


def _with_search_path(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(f'-csearch_path={schema}', safe='')}"


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """A fresh SQLite file; absolute path, so four slashes."""
    return f"sqlite:///{tmp_path / 'hpo.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL schema per test; every connection of the URL uses it."""
    import sqlalchemy as sa

    from hpo.storage_url import mask_url

    base = _postgres_base_url()
    schema = f"hpo_t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(base, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 5})
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.SQLAlchemyError as exc:
        engine.dispose()
        reason = f"PostgreSQL at {mask_url(base)} is unreachable: {str(exc.orig or exc).strip()}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set: PostgreSQL tests must not be skipped)")
        pytest.skip(reason)
    try:
        yield _with_search_path(base, schema)
    finally:
        with engine.begin() as conn:  # a leaked 'idle in transaction' fails here, not hangs
            conn.execute(sa.text("SET LOCAL lock_timeout = '30s'"))
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
    ids=["sqlite", "postgres"],
)
def storage_url(request) -> str:
    """The same test on a SQLite file and on a PostgreSQL schema."""
    return request.getfixturevalue(f"{request.param}_url")


# --- Ray: one local Ray per test session (ray.init costs 4-7 s) ---------------------------
@pytest.fixture(scope="session")
def ray_session():
    """A local Ray with 2 CPUs, no dashboard, token auth off; shut down at session end."""
    import os

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING",
                 log_to_driver=False)
    yield ray
    ray.shutdown()


# --- parallel runs (pytest-xdist, scripts/test) ------------------------------------------
def pytest_collection_modifyitems(config, items):
    """Under ``-n 2 --dist loadgroup``: every test that uses Ray runs in one worker (one local
    Ray per session; a second ``ray.init()`` beside a ``ray start`` head would join it)."""
    for item in items:
        if item.get_closest_marker("ray") or "ray_session" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("ray"))
