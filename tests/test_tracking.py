"""TrackingStore on real SQLite files and real PostgreSQL schemas (no mocks)."""

from __future__ import annotations

import json
import math
import multiprocessing
import subprocess
import traceback
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from hpo.errors import StorageError, StudyNotFound
from hpo.tracking import (
    SCHEMA_VERSION,
    TRIAL_STATES,
    MetricRecord,
    SweepRecord,
    TrackingStore,
    TrialRecord,
    TrialState,
)


def new_sweep(store: TrackingStore, name: str = "s", goal: str = "minimize", **kw) -> None:
    args = dict(
        config={"method": "tpe", "parameters": {"lr": {"min": 1e-5, "max": 1e-2}}},
        config_yaml="method: tpe\n",
        objective="loss",
        goal=goal,
        method="tpe",
        pruner="asha",
        storage=store.url,
    )
    args.update(kw)
    store.create_sweep(name, **args)


def test_round_trip(storage_url):
    store = TrackingStore(storage_url)
    new_sweep(store, storage="postgresql+psycopg2://bob:hunter2@db/x")
    params = {"lr": 0.001, "lora": {"r": 8, "alpha": 16}, "layers": [1, 2]}
    store.start_trial("s", 0, params, worker="local")
    store.start_trial("s", 1, {"lr": 0.01}, retry_of=0)
    store.set_trial_worker(
        "s", 0, host="node-1", pid=4242, worker="local:node-1:4242", device="cuda:0"
    )
    store.log_metrics("s", 0, 1, {"loss": 0.9, "acc": 0.5})
    store.log_metrics("s", 0, 2, {"loss": 0.4, "acc": 0.8})
    store.set_trial_attrs("s", 0, {"trainable_params": 1234, "stdout_tail": "ok"})
    store.set_trial_attrs("s", 0, {"tokens_per_s": 99.5, "stdout_tail": "done"})
    store.end_trial("s", 0, "complete", value=0.4, metrics={"loss": 0.4, "acc": 0.8})
    store.end_trial("s", 1, "failed", value=None, error="Traceback: boom")

    sweep = store.get_sweep("s")
    assert isinstance(sweep, SweepRecord)
    assert sweep.config["parameters"]["lr"]["max"] == 1e-2
    assert (sweep.config_yaml, sweep.objective, sweep.goal) == ("method: tpe\n", "loss", "minimize")
    assert (sweep.method, sweep.pruner, sweep.status) == ("tpe", "asha", "running")
    assert sweep.storage == "postgresql+psycopg2://bob:***@db/x"
    assert sweep.started.tzinfo == UTC and sweep.ended is None
    assert sweep.host
    assert {"optuna", "sqlalchemy"} <= set(sweep.versions)
    assert json.loads(json.dumps(sweep.to_dict()))["name"] == "s"
    assert [s.name for s in store.list_sweeps()] == ["s"]

    t0, t1 = store.trials("s")
    assert isinstance(t0, TrialRecord)
    assert (t0.sweep, t0.number, t0.state, t0.value) == ("s", 0, "complete", 0.4)
    assert t0.params == params
    assert t0.metrics == {"loss": 0.4, "acc": 0.8}
    assert t0.steps == 2
    assert (t0.host, t0.pid, t0.worker, t0.device) == (
        "node-1",
        4242,
        "local:node-1:4242",
        "cuda:0",
    )
    assert t0.attrs == {"trainable_params": 1234, "stdout_tail": "done", "tokens_per_s": 99.5}
    assert t0.started.tzinfo == UTC and t0.ended >= t0.started
    assert t0.duration_s == pytest.approx((t0.ended - t0.started).total_seconds())
    assert (t1.state, t1.value, t1.error, t1.retry_of, t1.steps) == (
        "failed",
        None,
        "Traceback: boom",
        0,
        None,
    )

    row = json.loads(json.dumps(t0.to_json()))
    for key in ("number", "state", "value", "params", "steps", "started", "ended", "worker"):
        assert key in row
    assert datetime.fromisoformat(row["started"]).utcoffset().total_seconds() == 0
    assert row["params"]["lora"] == {"r": 8, "alpha": 16}

    rows = store.metrics("s")
    assert all(isinstance(m, MetricRecord) for m in rows)
    assert [(m.number, m.step, m.name, m.value) for m in rows] == [
        (0, 1, "acc", 0.5),
        (0, 1, "loss", 0.9),
        (0, 2, "acc", 0.8),
        (0, 2, "loss", 0.4),
    ]
    assert rows[0].logged_at.tzinfo == UTC
    assert store.metrics("s", numbers=[1]) == []
    assert len(store.metrics("s", numbers=[0, 1])) == 4

    store.end_sweep("s", "finished")
    done = store.get_sweep("s")
    assert done.status == "finished" and done.ended >= done.started


def test_counts_include_zeros_and_states_filter(storage_url):
    store = TrackingStore(storage_url)
    new_sweep(store)
    assert store.counts("s") == dict.fromkeys(TRIAL_STATES, 0)
    for n in range(5):
        store.start_trial("s", n, {"n": n})
    store.end_trial("s", 0, "complete", value=1.0)
    store.end_trial("s", 1, TrialState.PRUNED, value=2.0)
    store.end_trial("s", 2, "complete", value=3.0)
    counts = store.counts("s")
    assert list(counts) == list(TRIAL_STATES)
    assert counts == {"running": 2, "complete": 2, "pruned": 1, "failed": 0, "interrupted": 0,
                      "paused": 0}
    assert [t.number for t in store.trials("s", states=["complete"])] == [0, 2]
    assert [t.number for t in store.trials("s", states=["running", "pruned"])] == [1, 3, 4]
    with pytest.raises(ValueError, match="Unknown trial state"):
        store.trials("s", states=["done"])
    with pytest.raises(ValueError, match="Unknown trial state"):
        store.end_trial("s", 3, "ok", value=1.0)


@pytest.mark.parametrize("goal", ["minimize", "maximize"])
def test_best_follows_goal_among_complete(storage_url, goal):
    store = TrackingStore(storage_url)
    new_sweep(store, goal=goal)
    assert store.best("s") is None
    results = [
        ("complete", 0.5),
        ("complete", 0.2),
        ("complete", 0.9),
        ("pruned", 0.0),
        ("pruned", 5.0),
        ("failed", None),
        ("complete", float("nan")),
    ]
    for n, (state, value) in enumerate(results):
        store.start_trial("s", n, {"n": n})
        store.end_trial("s", n, state, value=value)
    store.start_trial("s", 99, {})  # still running
    best = store.best("s")
    assert best is not None and best.state == "complete"
    assert (best.number, best.value) == ((1, 0.2) if goal == "minimize" else (2, 0.9))


def test_several_metrics_per_step_and_last_step(storage_url):
    store = TrackingStore(storage_url)
    new_sweep(store)
    store.start_trial("s", 0, {})
    store.start_trial("s", 1, {})
    for step in range(1, 4):
        store.log_metrics("s", 0, step, {"loss": 1 / step, "acc": step / 10, "lr": 1e-3})
    store.log_metrics("s", 1, 7, {"loss": 0.1})
    store.log_metrics("s", 0, 2, {"loss": 0.25})  # the same step again overwrites
    store.log_metrics("s", 0, 3, {})  # nothing to log: no-op
    with pytest.raises(ValueError, match="metric 'loss' must be a number"):
        store.log_metrics("s", 0, 4, {"acc": 1.0, "loss": "high"})  # nothing of it is stored
    rows = store.metrics("s")
    assert len(rows) == 3 * 3 + 1
    assert [(m.number, m.step) for m in rows] == sorted((m.number, m.step) for m in rows)
    by_key = {(m.number, m.step, m.name): m.value for m in rows}
    assert by_key[(0, 2, "loss")] == 0.25 and by_key[(0, 3, "acc")] == pytest.approx(0.3)
    assert [t.steps for t in store.trials("s")] == [3, 7]


def test_resume_keeps_first_started(storage_url):
    store = TrackingStore(storage_url)
    new_sweep(store, method="random")
    first = store.get_sweep("s")
    store.end_sweep("s", "interrupted")
    assert store.get_sweep("s").status == "interrupted"
    new_sweep(store, method="tpe")
    resumed = store.get_sweep("s")
    assert resumed.started == first.started
    assert (resumed.status, resumed.ended, resumed.method) == ("running", None, "tpe")
    assert len(store.list_sweeps()) == 1


def test_leases_take_renew_and_lost(storage_url):
    from datetime import UTC, datetime, timedelta

    from hpo.tracking import leases

    store = TrackingStore(storage_url)
    new_sweep(store)
    loop = leases.Owner("loop", "host-a", 111)
    for n in range(3):
        store.start_trial("s", n, {"n": n}, worker=str(loop),
                          placement={"host": "host-a", "pid": 111, "device": None}, leased=True)
    store.end_trial("s", 0, "complete", value=1.0)
    assert [lease.number for lease in leases.running(store, "s")] == [1, 2]
    worker = leases.Owner("worker", "host-b", 222)
    assert leases.take(store, "s", 1, worker, "cpu")
    assert not leases.take(store, "s", 0, worker, "cpu")  # finished: never taken again
    assert leases.owner_of(store, "s", 1) == ("running", "worker:host-b:222")
    assert leases.renew(store, worker) == 1
    by_number = {lease.number: lease for lease in leases.running(store, "s")}
    now = datetime.now(UTC)
    assert by_number[1].lost(60, now, "elsewhere") is None
    assert "no heartbeat" in by_number[1].lost(60, now + timedelta(seconds=61), "elsewhere")
    # same host and the owner's process is gone: lost at once, lease or not
    dead = leases.Owner("worker", "host-b", 2**22 + 12345)
    assert leases.take(store, "s", 2, dead, "cpu")
    lease = {x.number: x for x in leases.running(store, "s")}[2]
    assert "exited" in lease.lost(60, now, "host-b")


def test_writes_before_start_trial_create_the_trial(storage_url):
    store = TrackingStore(storage_url)
    new_sweep(store)
    store.log_metrics("s", 3, 1, {"loss": 1.0})
    store.end_trial("s", 4, "complete", value=2.0)
    (t3, t4) = store.trials("s")
    assert (t3.number, t3.state, t3.steps) == (3, "running", 1)
    assert (t4.number, t4.state, t4.value, t4.duration_s) == (4, "complete", 2.0, None)
    with pytest.raises(StudyNotFound):
        store.start_trial("nope", 0, {})


def test_non_finite_values(storage_url):
    store = TrackingStore(storage_url)
    new_sweep(store, config={"x": float("nan")})
    store.start_trial("s", 0, {"p": float("inf")})
    store.log_metrics("s", 0, 1, {"nan": float("nan"), "inf": float("inf"), "ninf": -math.inf})
    store.set_trial_attrs("s", 0, {"peak": float("nan")})
    store.end_trial("s", 0, "complete", value=float("nan"), metrics={"loss": float("nan")})
    store.start_trial("s", 1, {})
    store.end_trial("s", 1, "complete", value=float("inf"))
    values = {m.name: m.value for m in store.metrics("s")}
    assert values == {"inf": math.inf, "nan": None, "ninf": -math.inf}
    t0, t1 = store.trials("s")
    assert t0.value is None and t0.params == {"p": None} and t0.metrics == {"loss": None}
    assert t0.attrs == {"peak": None}
    assert t1.value == math.inf and t1.to_json()["value"] is None
    json.dumps(t1.to_json(), allow_nan=False)
    assert store.get_sweep("s").config == {"x": None}
    assert store.best("s").number == 1


def test_delete_sweep(storage_url):
    store = TrackingStore(storage_url)
    new_sweep(store, name="a")
    new_sweep(store, name="b")
    store.start_trial("a", 0, {})
    store.log_metrics("a", 0, 1, {"loss": 1.0})
    store.start_trial("b", 0, {})
    store.log_metrics("b", 0, 1, {"loss": 2.0})
    store.delete_sweep("a")
    store.delete_sweep("a")  # already gone: no error
    assert [s.name for s in store.list_sweeps()] == ["b"]
    with pytest.raises(StudyNotFound):
        store.trials("a")
    assert [m.value for m in store.metrics("b")] == [2.0]


def test_study_not_found_lists_existing_names(storage_url):
    store = TrackingStore(storage_url)
    with pytest.raises(StudyNotFound, match="no sweeps yet"):
        store.get_sweep("x")
    new_sweep(store, name="alpha")
    new_sweep(store, name="beta")
    for read in (store.get_sweep, store.trials, store.counts, store.best, store.metrics):
        with pytest.raises(StudyNotFound) as err:
            read("gamma")
        assert "'gamma'" in str(err.value)
        assert "'alpha'" in str(err.value) and "'beta'" in str(err.value)


def _set_version(url: str, version: str) -> None:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE hpo_meta SET value = :v WHERE key = 'schema_version'"), {"v": version}
        )
    engine.dispose()


@pytest.mark.parametrize("found, hint", [(SCHEMA_VERSION + 98, "newer"), (0, "older")])
def test_schema_version_mismatch_is_refused(storage_url, found, hint):
    TrackingStore(storage_url).close()
    _set_version(storage_url, str(found))
    with pytest.raises(StorageError) as err:
        TrackingStore(storage_url)
    msg = str(err.value)
    assert f"version {found}" in msg and f"version {SCHEMA_VERSION}" in msg
    assert hint in msg
    assert ("Upgrade hpo" in msg) if hint == "newer" else ("fresh storage" in msg)


def test_password_is_masked_in_errors():
    url = "postgresql+psycopg2://alice:s3cret-pw@127.0.0.1:1/test"
    with pytest.raises(StorageError) as err:
        TrackingStore(url)
    text = "".join(traceback.format_exception(err.value))
    assert "alice:***@127.0.0.1:1" in str(err.value)
    assert "s3cret-pw" not in text


def test_sqlite_missing_folder_is_a_storage_error(tmp_path):
    with pytest.raises(StorageError, match="does not exist"):
        TrackingStore(f"sqlite:///{tmp_path / 'no' / 'such' / 'hpo.db'}")


def test_git_commit_recorded_only_in_a_repo(sqlite_url, tmp_path, monkeypatch):
    store = TrackingStore(sqlite_url)
    plain = tmp_path / "plain"
    plain.mkdir()
    monkeypatch.chdir(plain)
    new_sweep(store, name="nogit")
    assert store.get_sweep("nogit").git_commit is None
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], cwd=repo, check=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()
    monkeypatch.chdir(repo)
    new_sweep(store, name="withgit")
    assert store.get_sweep("withgit").git_commit == head


@pytest.mark.postgres
def test_postgres_url_isolates_schema(postgres_url):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(postgres_url)
    optuna.create_study(storage=storage, study_name="s")
    TrackingStore(postgres_url).close()
    schema = sa.engine.make_url(postgres_url).query["options"].split("=", 1)[1]
    engine = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT current_schema()")) == schema
        tables = set(
            conn.scalars(
                sa.text("SELECT table_name FROM information_schema.tables WHERE table_schema = :s"),
                {"s": schema},
            )
        )
    engine.dispose()
    assert {"studies", "trials", "hpo_meta", "hpo_sweeps", "hpo_trials", "hpo_metrics"} <= tables
    storage.remove_session()
    storage.engine.dispose()


# -- concurrency --------------------------------------------------------------------------------
WRITERS, STEPS = 4, 100  # each writer logs STEPS x 2 = 200 metric rows


def _writer(url: str, number: int, barrier) -> None:
    barrier.wait(timeout=60)  # all open the (not yet created) store at once: schema race too
    store = TrackingStore(url)
    new_sweep(store, name="race")
    store.start_trial("race", number, {"writer": number})
    for step in range(STEPS):
        store.log_metrics("race", number, step, {"loss": 1.0 / (step + 1), "acc": step / STEPS})
    store.set_trial_attrs("race", number, {"writer": number})
    store.end_trial("race", number, "complete", value=float(number))
    store.close()


def test_concurrent_writer_processes(storage_url):
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(WRITERS)
    procs = [ctx.Process(target=_writer, args=(storage_url, n, barrier)) for n in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    codes = [p.exitcode for p in procs]
    for p in procs:
        if p.is_alive():
            p.kill()
    assert codes == [0] * WRITERS, f"writer exit codes {codes} (tracebacks in captured stderr)"
    store = TrackingStore(storage_url)
    rows = store.metrics("race")
    assert len(rows) == WRITERS * STEPS * 2
    assert {(m.number, m.step, m.name) for m in rows} == {
        (n, s, k) for n in range(WRITERS) for s in range(STEPS) for k in ("loss", "acc")
    }
    assert store.counts("race")["complete"] == WRITERS
    assert [t.steps for t in store.trials("race")] == [STEPS - 1] * WRITERS
    assert [t.attrs for t in store.trials("race")] == [{"writer": n} for n in range(WRITERS)]


@pytest.mark.postgres
def test_survives_a_killed_postgres_connection(postgres_url):
    store = TrackingStore(postgres_url)
    new_sweep(store)
    store.start_trial("s", 0, {})
    pid = store._run(
        "read the backend pid",
        lambda conn: conn.scalar(sa.text("SELECT pg_backend_pid()")),
        write=False,
    )
    engine = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:  # what a PostgreSQL restart does to a pooled connection
        assert conn.scalar(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
    engine.dispose()
    store.log_metrics("s", 0, 1, {"loss": 1.0})
    assert [m.value for m in store.metrics("s")] == [1.0]
