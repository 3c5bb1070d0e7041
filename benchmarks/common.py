"""Shared helpers for benchmark scripts: storages made and dropped per run, tables, timing."""

from __future__ import annotations

import contextlib
import os
import platform
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

PG_URL = os.environ.get("HPO_BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


@contextlib.contextmanager
def sqlite_storage() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="hpo-bench-") as tmp:
        yield f"sqlite:///{Path(tmp) / 'bench.db'}"


@contextlib.contextmanager
def postgres_storage() -> Iterator[str]:
    """A fresh schema in the benchmark PostgreSQL database, dropped afterwards."""
    import sqlalchemy as sa

    schema = f"hpo_bench_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(PG_URL, pool_pre_ping=True)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


def storages(names: list[str]):
    table = {"sqlite": sqlite_storage, "postgres": postgres_storage}
    return [(n, table[n]) for n in names]


def machine() -> str:
    import optuna

    return (f"{platform.node()} {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"optuna {optuna.__version__}")


def markdown(rows: list[dict], cols: list[str]) -> str:
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)
