"""The Optuna journal in the tracking database (hpo.tracking.journal), on SQLite and PostgreSQL."""

from __future__ import annotations

import multiprocessing

import optuna
import pytest
from optuna.trial import TrialState

from hpo.study import open_storage
from hpo.tracking import TrackingStore

PROCS, TRIALS_EACH = 4, 15


def _worker(url: str, barrier) -> None:
    study = optuna.load_study(study_name="shared", storage=open_storage(url, "shared"),
                              sampler=optuna.samplers.RandomSampler())
    barrier.wait()
    for _ in range(TRIALS_EACH):
        trial = study.ask()
        x = trial.suggest_float("x", -1, 1)
        trial.report(x, 1)
        study.tell(trial, x * x)


def test_processes_share_one_study(storage_url):
    """Concurrent askers/tellers: gapless journal, one replay order, no trial lost or doubled."""
    optuna.create_study(study_name="shared", storage=open_storage(storage_url, "shared"))
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCS)
    procs = [ctx.Process(target=_worker, args=(storage_url, barrier)) for _ in range(PROCS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * PROCS
    study = optuna.load_study(study_name="shared", storage=open_storage(storage_url, "shared"))
    trials = study.get_trials()
    assert len(trials) == PROCS * TRIALS_EACH
    assert [t.number for t in trials] == list(range(PROCS * TRIALS_EACH))
    # x * x as the worker computed it (x ** 2 can differ from it in the last bit)
    assert all(t.state == TrialState.COMPLETE and t.value == t.params["x"] * t.params["x"]
               for t in trials)
    assert all(t.intermediate_values == {1: t.params["x"]} for t in trials)


def test_sweeps_have_separate_journals(storage_url):
    for name in ("a", "b"):
        study = optuna.create_study(study_name=name, storage=open_storage(storage_url, name))
        study.enqueue_trial({"x": 0.5})
    assert optuna.get_all_study_names(open_storage(storage_url, "a")) == ["a"]
    store = TrackingStore(storage_url)
    assert store.read_journal("a", 0) and store.read_journal("b", 0)
    store.delete_sweep("a")
    assert not store.read_journal("a", 0) and store.read_journal("b", 0)


def test_enqueued_trial_is_popped_once(storage_url):
    """Two storages (two processes' replicas) race for one enqueued trial: one gets it."""
    optuna.create_study(study_name="q", storage=open_storage(storage_url, "q"))
    one = optuna.load_study(study_name="q", storage=open_storage(storage_url, "q"))
    two = optuna.load_study(study_name="q", storage=open_storage(storage_url, "q"))
    one.enqueue_trial({"x": 0.25})
    a, b = one.ask(), two.ask()
    xs = [t.suggest_float("x", 0, 1) for t in (a, b)]
    assert xs.count(0.25) == 1
    assert len(one.get_trials()) == 2


def test_retried_append_is_not_written_twice(sqlite_url, monkeypatch):
    """A connection lost after COMMIT makes the store retry the append: it must not repeat."""
    store = TrackingStore(sqlite_url)
    original = TrackingStore._run

    def run_twice(self, action, fn, *, write=True):
        result = original(self, action, fn, write=write)
        if action.startswith("append"):
            original(self, action, fn, write=write)  # the retry after a "lost" connection
        return result

    monkeypatch.setattr(TrackingStore, "_run", run_twice)
    store.append_journal("j", ['{"a": 1}', '{"a": 2}'])
    store.append_journal("j", ['{"a": 3}'])
    monkeypatch.undo()
    assert store.read_journal("j", 0) == ['{"a": 1}', '{"a": 2}', '{"a": 3}']
    assert store.read_journal("j", 2) == ['{"a": 3}']


def test_non_finite_values_round_trip(storage_url):
    study = optuna.create_study(study_name="nan", storage=open_storage(storage_url, "nan"))
    trial = study.ask()
    trial.report(float("nan"), 1)
    trial.report(float("inf"), 2)
    study.tell(trial, state=TrialState.PRUNED)
    again = optuna.load_study(study_name="nan", storage=open_storage(storage_url, "nan"))
    values = again.trials[0].intermediate_values
    assert values[1] != values[1] and values[2] == float("inf")


def test_unreachable_database_is_a_clear_error():
    from hpo.errors import StorageError

    with pytest.raises(StorageError, match="Check that the database server is running"):
        open_storage("postgresql+psycopg2://nobody:secret@127.0.0.1:1/x", "s")


def test_a_locked_transaction_reads_the_journal_once(storage_url):
    """Under the journal's lock nobody else appends, so Optuna's read-before-every-call costs
    one query per transaction; what it wrote is seen, and a rollback leaves nothing behind."""
    import sqlalchemy as sa

    store = TrackingStore(storage_url)
    study = optuna.create_study(study_name="j", storage=open_storage(storage_url, "j", store))
    study.tell(study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}), 0.5)
    statements: list[str] = []
    sa.event.listen(store._engine, "before_cursor_execute",
                    lambda conn, cur, stmt, *a: statements.append(stmt))
    with store.transaction("ask three", journal="j"):
        for _ in range(3):
            trial = study.ask()
            trial.suggest_float("x", 0, 1)
    journal_reads = [s for s in statements if "FROM hpo_journal" in s]
    assert len(journal_reads) == 1, journal_reads  # was one per storage call
    fresh = optuna.load_study(study_name="j", storage=open_storage(storage_url, "j"))
    assert [t.number for t in fresh.get_trials()] == [0, 1, 2, 3]  # gapless, committed
    assert all("x" in t.params for t in fresh.get_trials())

    class Boom(Exception):
        pass

    with pytest.raises(Boom), store.transaction("ask, then fail", journal="j"):
        study.ask()
        raise Boom
    assert len(store.read_journal("j", 0)) == len(fresh._storage._backend.read_logs(0))
    again = optuna.load_study(study_name="j", storage=open_storage(storage_url, "j"))
    assert len(again.get_trials()) == 4  # the rolled-back trial is not there


def test_a_replica_ahead_of_the_journal_does_not_make_a_gap(storage_url):
    """A transaction rolled back after the replica applied its lines leaves the replica ahead
    of the journal; the next locked transaction must still append right after the last line
    (numbers gapless), not after what the replica thinks it read."""
    store = TrackingStore(storage_url)
    store.append_journal("g", ['{"a": 0}', '{"a": 1}'])
    with store.transaction("read past the end", journal="g"):
        assert store.read_journal("g", 5) == []  # the replica thinks 5 lines exist
        store.append_journal("g", ['{"a": 2}'])
        assert store.read_journal("g", 2) == ['{"a": 2}']
    import sqlalchemy as sa

    from hpo.tracking.schema import journal as J

    with store._engine.connect() as conn:
        seqs = list(conn.scalars(sa.select(J.c.seq).where(J.c.journal == "g").order_by(J.c.seq)))
    assert seqs == [0, 1, 2]
