"""The Ray backend on a real local Ray (started once per test session, 2 CPUs)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

import hpo
from hpo.tracking import TrackingStore

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[1]


def branin(storage: str, name: str, backend: str, **extra) -> dict:
    cfg = {
        "name": name,
        "method": "tpe",
        "metric": {"name": "loss", "goal": "minimize"},
        "parameters": {
            "x1": {"distribution": "uniform", "min": -5, "max": 10},
            "x2": {"distribution": "uniform", "min": 0, "max": 15},
        },
        "trainer": "examples.objectives:branin",
        "trainer_args": {"epochs": 9},
        "early_terminate": {"type": "asha", "min_iter": 1, "eta": 3},
        "seed": 7,
        "storage": storage,
        "backend": backend,
        "budget": {"trials": 20},
    }
    cfg.update(extra)
    return cfg


def test_ray_sweep_matches_local_backend(ray_session, sqlite_url):
    local = hpo.run_sweep(branin(sqlite_url, "local", "local"))
    on_ray = hpo.run_sweep(branin(sqlite_url, "ray", "ray"))
    store = TrackingStore(sqlite_url)
    a, b = store.trials("local"), store.trials("ray")
    assert len(a) == len(b) == 20
    assert [(t.state, t.params, t.steps) for t in a] == [(t.state, t.params, t.steps) for t in b]
    assert on_ray.counts == local.counts and on_ray.counts["pruned"] > 0
    assert all(t.worker.startswith("ray:") and t.pid != os.getpid() for t in b)
    assert all(t.device == "cpu" for t in b)


def _overlap(trials) -> int:
    events = sorted([(t.started, 1) for t in trials] + [(t.ended, -1) for t in trials],
                    key=lambda e: (e[0], e[1]))
    now = peak = 0
    for _, delta in events:
        now += delta
        peak = max(peak, now)
    return peak


def test_fractional_cpus_run_four_at_once(ray_session, sqlite_url):
    cfg = {
        "name": "frac", "method": "random", "metric": {"name": "loss"},
        "parameters": {"x": {"min": 0.0, "max": 1.0}, "seconds": {"value": 1.5}},
        "trainer": "examples.objectives:sleep", "backend": "ray",
        "resources": {"cpu": 0.5}, "parallel": 4, "storage": sqlite_url,
        "budget": {"trials": 8},
    }
    result = hpo.run_sweep(cfg)
    assert result.counts["complete"] == 8
    trials = TrackingStore(sqlite_url).trials("frac")
    assert _overlap(trials) == 4
    assert len({t.pid for t in trials}) == 4  # four actors, each reused for two trials


def test_killed_worker_fails_trial_and_retries(ray_session, sqlite_url):
    cfg = {
        "name": "kill", "method": "random", "metric": {"name": "loss"},
        "parameters": {"x": {"min": 0.0, "max": 1.0}, "seconds": {"value": 1.0}},
        "trainer": "examples.objectives:sleep", "backend": "ray", "parallel": 2,
        "storage": sqlite_url, "seed": 0, "budget": {"trials": 6},
    }
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(r=hpo.run_sweep(cfg)))
    thread.start()
    store = TrackingStore(sqlite_url)
    victim = None
    deadline = time.monotonic() + 60
    while victim is None and time.monotonic() < deadline:
        try:
            running = [t for t in store.trials("kill", states=["running"])
                       if t.pid and (t.worker or "").startswith("ray:")]  # not yet "loop:"
        except Exception:
            running = []
        if running:
            victim = running[0]
        time.sleep(0.05)
    assert victim is not None, "no running trial seen"
    os.kill(victim.pid, signal.SIGKILL)
    thread.join(timeout=120)
    assert not thread.is_alive()
    trials = store.trials("kill")
    lost = [t for t in trials if t.number == victim.number][0]
    assert lost.state == "failed" and "worker" in lost.error.lower()
    retry = [t for t in trials if t.retry_of == victim.number]
    assert len(retry) == 1 and retry[0].params == victim.params and retry[0].state == "complete"
    assert result["r"].counts["complete"] == 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_join_existing_cluster_leaves_it_running(tmp_path, sqlite_url):
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO)}
    ray_bin = str(Path(sys.executable).parent / "ray")
    temp = tempfile.mkdtemp(prefix="hpo-ray-", dir="/tmp")  # short: Ray's socket paths are capped
    head = subprocess.Popen(
        [ray_bin, "start", "--head", f"--port={port}", "--num-cpus=1",
         "--include-dashboard=false", "--block", f"--temp-dir={temp}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    try:
        status = [ray_bin, "status", "--address", address]
        deadline = time.monotonic() + 60
        # the head's GCS port accepting connections (each `ray status` costs seconds)
        while True:
            assert time.monotonic() < deadline and head.poll() is None, "ray head did not start"
            with socket.socket() as probe:
                probe.settimeout(1.0)
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        sweep = tmp_path / "joined.yaml"
        sweep.write_text(
            "name: joined\nmethod: random\nmetric: {name: loss}\n"
            "parameters:\n  x: {min: 0.0, max: 1.0}\n"
            "trainer: examples.objectives:noop\nbudget: {trials: 4}\n"
        )
        proc = subprocess.run(
            [sys.executable, "-m", "hpo.cli", "sweep", str(sweep), "--backend", "ray",
             "--ray-address", address, "--storage", sqlite_url, "--no-report"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180,
        )
        assert proc.returncode == 0, proc.stderr
        assert TrackingStore(sqlite_url).counts("joined")["complete"] == 4
        assert subprocess.run(status, env=env, capture_output=True).returncode == 0
        assert head.poll() is None
    finally:
        # a throw-away head in its own session: no graceful shutdown needed (that waits ~30 s)
        os.killpg(head.pid, signal.SIGKILL)
        head.wait(timeout=30)
        shutil.rmtree(temp, ignore_errors=True)


def test_bad_ray_address_is_a_clear_error(tmp_path, sqlite_url):
    port = _free_port()
    sweep = tmp_path / "noray.yaml"
    sweep.write_text(
        "method: random\nmetric: {name: loss}\nparameters:\n  x: {min: 0.0, max: 1.0}\n"
        "trainer: examples.objectives:noop\nbudget: {trials: 1}\n"
    )
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "hpo.cli", "sweep", str(sweep), "--backend", "ray",
         "--ray-address", f"127.0.0.1:{port}", "--storage", sqlite_url, "--no-report"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 2
    assert "Ray" in proc.stderr and "Traceback" not in proc.stderr


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _memory_hog(params, ctx):
    """Trial 0 is good; trial 1 holds ~400 MB of torch tensors when it gets pruned."""
    import torch

    ctx.set_attrs(rss_start_mb=_rss_mb())
    hog = torch.ones(100 * 2**20, dtype=torch.float32) if ctx.number == 1 else None
    for step in range(1, 4):
        ctx.set_attrs(rss_peak_mb=_rss_mb())
        ctx.report({"loss": 10.0 if ctx.number == 1 else 1.0 / step}, step=step)
    del hog
    return {"loss": 1.0 / 3}


def test_pruned_torch_trial_returns_its_memory(ray_session, sqlite_url):
    cfg = {
        "name": "mem", "method": "random", "metric": {"name": "loss"},
        "parameters": {"x": {"min": 0.0, "max": 1.0}}, "backend": "ray",
        "early_terminate": {"type": "median", "n_startup_trials": 1},
        "storage": sqlite_url, "budget": {"trials": 3},
    }
    hpo.run_sweep(cfg, objective=_memory_hog)
    trials = {t.number: t for t in TrackingStore(sqlite_url).trials("mem")}
    assert trials[1].state == "pruned" and trials[1].steps == 1
    assert trials[0].pid == trials[1].pid == trials[2].pid  # the same reused actor
    held = trials[1].attrs["rss_peak_mb"] - trials[1].attrs["rss_start_mb"]
    assert held > 350
    # the next trial on that worker starts with the pruned trial's memory given back
    assert trials[2].attrs["rss_start_mb"] < trials[1].attrs["rss_peak_mb"] - 300
