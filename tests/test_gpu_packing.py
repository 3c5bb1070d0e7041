"""``resources: {gpu: auto}`` on the CPU: the packer's arithmetic over made-up GPUs, the
measurement hook (a fake torch.cuda), the config, the Ray backend's admission and actor
options (a fake ``ray`` module), and one sweep on a real local Ray that declares two logical
GPUs (trainers report made-up peaks). No test needs a GPU."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest

from hpo import gpu_memory
from hpo.backends.gpu_packing import GIB, GpuDoesNotFit, GpuPacker, Placement
from hpo.config import Resources, load_config, parse_config
from hpo.errors import BackendError, ConfigError
from hpo.gpu_memory import GpuUsage
from hpo.lifecycle import TrialJob, TrialOutcome

REPO = Path(__file__).resolve().parents[1]
GPU80 = 80 * GIB


def measured(packer: GpuPacker, peak_gib: float, total: int | None = GPU80) -> None:
    """Run one measuring trial through ``packer``: place it, learn its peak, release it."""
    p = packer.place()
    assert p is not None and p.exclusive
    packer.release(p)
    assert packer.observe(GpuUsage(int(peak_gib * GIB), total), p) is None


def fill(packer: GpuPacker) -> list[Placement]:
    out = []
    while (p := packer.place()) is not None:
        out.append(p)
    return out


# -- the packer ------------------------------------------------------------------------------
def test_first_trial_runs_alone_until_measured() -> None:
    packer = GpuPacker({0: GPU80}, parallel=8)
    assert packer.estimate is None and packer.fraction() == 1.0 and packer.free_slots() == 1
    first = packer.place()
    assert first == Placement(0, exclusive=True)
    assert packer.place() is None and packer.free_slots() == 0
    packer.release(first)
    packer.observe(GpuUsage(20 * GIB, GPU80), first)
    # 20 GiB x 1.1 + 1 GiB reserve = 23 GiB a trial; 95% of 80 GiB = 76 GiB: three fit
    assert packer.estimate == pytest.approx(23 * GIB, abs=1)
    assert packer.per_gpu(0) == 3 and packer.free_slots() == 3
    placed = fill(packer)
    assert [p.gpu for p in placed] == [0, 0, 0] and not any(p.exclusive for p in placed)
    assert packer.fraction() == 0.3333  # Ray fits three of these on a GPU, not four
    assert 3 * packer.fraction() <= 1 < 4 * packer.fraction()


def test_release_frees_room() -> None:
    packer = GpuPacker({0: GPU80}, parallel=8)
    measured(packer, 20)
    placed = fill(packer)
    assert len(placed) == 3 and packer.place() is None
    packer.release(placed[1])
    assert packer.free_slots() == 1 and packer.place() == Placement(0, False)


def test_spread_over_gpus_and_parallel_cap() -> None:
    packer = GpuPacker({0: GPU80, 1: GPU80}, parallel=4)
    a, b = packer.place(), packer.place()  # one measuring trial per GPU at once
    assert {a.gpu, b.gpu} == {0, 1} and a.exclusive and b.exclusive
    assert packer.place() is None
    packer.release(a)
    packer.observe(GpuUsage(10 * GIB, GPU80), a)
    # six 12 GiB trials fit a GPU, but parallel 4 over 2 GPUs spreads them two a GPU
    assert packer.per_gpu(0) == 2 and packer.fraction() == 0.5
    assert packer.free_slots() == 2  # GPU 1 still has its measuring trial to itself
    assert [p.gpu for p in fill(packer)] == [0, 0]
    packer.release(b)
    assert [p.gpu for p in fill(packer)] == [1, 1]
    assert packer.placed() == 4 and packer.free_slots() == 0


def test_spread_alternates_gpus() -> None:
    packer = GpuPacker({0: GPU80, 1: GPU80, 2: GPU80}, parallel=9)
    measured(packer, 10)
    assert [p.gpu for p in fill(packer)] == [0, 1, 2] * 3


@pytest.mark.parametrize("peak_gib", [0.3, 3, 7.5, 17, 33, 50, 68])
@pytest.mark.parametrize("totals_gib", [(80,), (80, 80), (24, 80, 141)])
def test_never_more_than_fits(peak_gib: float, totals_gib: tuple[int, ...]) -> None:
    inventory = {i: t * GIB for i, t in enumerate(totals_gib)}
    packer = GpuPacker(inventory, parallel=64)
    first = packer.place()
    packer.release(first)
    packer.observe(GpuUsage(int(peak_gib * GIB), inventory[first.gpu]), first)
    placed = fill(packer)
    for gpu, total in inventory.items():
        n = sum(1 for p in placed if p.gpu == gpu)
        if n > 1:
            assert n * packer.estimate <= total * 0.95
        elif n == 1 and peak_gib * GIB > total:
            pytest.fail(f"a trial of {peak_gib} GiB placed on a {total / GIB} GiB GPU")
    assert len(placed) == sum(packer.per_gpu(g) for g in inventory)


def test_one_that_fits_only_alone_runs_alone() -> None:
    packer = GpuPacker({0: GPU80, 1: GPU80}, parallel=4)
    measured(packer, 70)  # 70 GiB x 1.1 + 1 > 76 usable, but it ran alone: one per GPU
    placed = fill(packer)
    assert [p.exclusive for p in placed] == [True, True] and packer.fraction() == 1.0


def test_gpus_too_small_for_a_trial_get_none() -> None:
    packer = GpuPacker({0: GPU80, 1: 24 * GIB}, parallel=8)
    measured(packer, 30)
    assert packer.per_gpu(1) == 0
    assert {p.gpu for p in fill(packer)} == {0}


def test_uniform_inventory_takes_the_smallest_and_learns_unknown_totals() -> None:
    assert set(GpuPacker({0: GPU80, 1: 40 * GIB}, uniform=True).totals.values()) == {40 * GIB}
    packer = GpuPacker({0: None, 1: None}, parallel=8, uniform=True)
    assert packer.free_slots() == 2  # measuring needs no totals
    measured(packer, 10, total=GPU80)
    assert packer.totals == {0: GPU80, 1: GPU80} and packer.per_gpu(0) == 4


def test_unknown_total_keeps_trials_alone() -> None:
    packer = GpuPacker({0: None}, parallel=4)
    measured(packer, 10, total=None)
    assert packer.per_gpu(0) == 1 and packer.fraction() == 1.0


def test_no_measurement_keeps_measuring_with_a_warning() -> None:
    packer = GpuPacker({0: GPU80}, parallel=4)
    p = packer.place()
    packer.release(p)
    note = packer.observe(None, p, trial=0)
    assert "trial 0 reported no GPU memory" in note and "peak_gpu_mem_bytes" in note
    assert packer.estimate is None and packer.place().exclusive


def test_failed_trial_peak_only_raises_an_estimate() -> None:
    packer = GpuPacker({0: GPU80}, parallel=8)
    p = packer.place()
    packer.release(p)
    packer.observe(GpuUsage(GIB, GPU80), p, ok=False)  # failed at once: not a measurement
    assert packer.estimate is None
    measured(packer, 10)
    p = packer.place()
    packer.release(p)
    packer.observe(GpuUsage(30 * GIB, GPU80), p, ok=False)
    assert packer.peak == 30 * GIB


def test_out_of_memory_while_shared_packs_fewer() -> None:
    packer = GpuPacker({0: GPU80}, parallel=8)
    measured(packer, 10)
    assert packer.per_gpu(0) == 6
    placed = fill(packer)
    for p in placed:
        packer.release(p)
    note = packer.observe(GpuUsage(11 * GIB, GPU80), placed[0], ok=False, oom=True, trial=4)
    assert "trial 4 ran out of GPU memory while sharing GPU 0" in note
    assert "at most 5 per GPU" in note and "fixed fraction" in note
    assert packer.per_gpu(0) == 5 and len(fill(packer)) == 5


def test_one_trial_alone_does_not_fit() -> None:
    packer = GpuPacker({0: GPU80}, parallel=4)
    p = packer.place()
    packer.release(p)
    with pytest.raises(GpuDoesNotFit) as err:
        packer.observe(GpuUsage(79 * GIB, GPU80), p, ok=False, oom=True, trial=0)
    msg = str(err.value)
    assert isinstance(err.value, BackendError)
    assert "trial 0 ran out of GPU memory alone on a GPU with 80.0 GiB" in msg
    assert "(it had reached 79.0 GiB)" in msg and "does not fit on one GPU" in msg
    for fix in ("smaller batch size", "gradient checkpointing", "more memory"):
        assert fix in msg


def test_a_reported_peak_bigger_than_every_gpu_does_not_fit() -> None:
    packer = GpuPacker({0: 24 * GIB, 1: 40 * GIB}, parallel=4)
    p = packer.place()
    packer.release(p)
    with pytest.raises(GpuDoesNotFit, match=r"peaked at 50.0 GiB, more than the largest GPU "
                                            r"has \(40.0 GiB\)"):
        packer.observe(GpuUsage(50 * GIB, None), p, trial=2)


def test_out_of_memory_alone_after_a_fit_is_only_a_warning() -> None:
    packer = GpuPacker({0: GPU80}, parallel=4)
    measured(packer, 10)
    packer.observe(GpuUsage(GIB, GPU80), Placement(0, True), ok=False, oom=True, trial=9)
    assert packer.cap is None and packer.per_gpu(0) == 4


def test_no_gpu_is_an_error() -> None:
    with pytest.raises(BackendError, match="found no GPU"):
        GpuPacker({})


# -- measuring (a fake torch.cuda) -----------------------------------------------------------
class FakeCuda:
    def __init__(self, peaks: dict[int, tuple[int, int]], total: int = GPU80) -> None:
        self.peaks, self.total = peaks, total
        self.resets: list[int] = []
        self.emptied = 0

    def is_initialized(self) -> bool:
        return True

    def device_count(self) -> int:
        return len(self.peaks)

    def reset_peak_memory_stats(self, i: int) -> None:
        self.resets.append(i)

    def max_memory_allocated(self, i: int) -> int:
        return self.peaks[i][0]

    def max_memory_reserved(self, i: int) -> int:
        return self.peaks[i][1]

    def get_device_properties(self, i: int) -> Any:
        return types.SimpleNamespace(total_memory=self.total)

    def empty_cache(self) -> None:
        self.emptied += 1


class Ctx:
    def __init__(self) -> None:
        self.attrs: dict[str, Any] = {}

    def set_attrs(self, **attrs: Any) -> None:
        self.attrs.update(attrs)


def test_record_measures_torch_cuda(monkeypatch) -> None:
    cuda = FakeCuda({0: (3 * GIB, 4 * GIB), 1: (5 * GIB, 6 * GIB)})
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    gpu_memory.reset()
    assert cuda.resets == [0, 1] and gpu_memory.last() is None
    ctx = Ctx()
    usage = gpu_memory.record(ctx, release=True)
    assert usage == GpuUsage(6 * GIB, GPU80, 5 * GIB) == gpu_memory.last()
    assert ctx.attrs == {"peak_gpu_mem_bytes": 5 * GIB, "peak_gpu_reserved_bytes": 6 * GIB,
                         "gpu_total_bytes": GPU80}
    assert cuda.emptied == 1


def test_record_keeps_a_trainers_own_figure(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=FakeCuda({0: (1, 1)})))
    ctx = Ctx()
    ctx.set_attrs(peak_gpu_mem_bytes=7 * GIB, gpu_total_bytes=GPU80)
    gpu_memory.reset()
    assert gpu_memory.record(ctx) == GpuUsage(7 * GIB, GPU80)
    assert ctx.attrs == {"peak_gpu_mem_bytes": 7 * GIB, "gpu_total_bytes": GPU80}


def test_record_without_cuda_is_a_no_op(monkeypatch) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    ctx = Ctx()
    gpu_memory.reset()
    assert gpu_memory.record(ctx, release=True) is None and ctx.attrs == {}
    idle = FakeCuda({0: (0, 0)})
    idle.is_initialized = lambda: False  # torch imported, CUDA never used
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=idle))
    gpu_memory.reset()
    assert gpu_memory.record(ctx) is None and ctx.attrs == {} and idle.resets == []


def test_record_never_raises(monkeypatch) -> None:
    cuda = FakeCuda({0: (GIB, GIB)})
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))

    class Down(Ctx):
        def set_attrs(self, **attrs: Any) -> None:
            raise RuntimeError("storage down")

    gpu_memory.reset()
    assert gpu_memory.record(Down()) == GpuUsage(GIB, GPU80, GIB)


@pytest.mark.parametrize("error, oom", [
    ("OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", True),
    ("RuntimeError: CUDA error: out of memory", True),
    ("torch.OutOfMemoryError: HIP out of memory.", True),
    ("MemoryError: out of memory", False),
    ("ValueError: bad lr", False),
    (None, False),
])
def test_is_oom(error: str | None, oom: bool) -> None:
    assert gpu_memory.is_oom(error) is oom


# -- config ----------------------------------------------------------------------------------
def sweep(**resources: Any) -> dict[str, Any]:
    return {"method": "random", "metric": {"name": "loss"}, "trainer": "x:y",
            "parameters": {"x": {"values": [1, 2]}}, "resources": resources}


def test_config_accepts_gpu_auto() -> None:
    for value in ("auto", "AUTO", " auto "):
        config = parse_config(sweep(gpu=value))
        assert config.resources.gpu == "auto"
    assert parse_config(config.to_dict()).resources.gpu == "auto"
    assert parse_config(sweep(gpu=0.25)).resources.gpu == 0.25
    assert parse_config(sweep(gpu=2)).resources.gpu == 2.0
    assert Resources().gpu == 0


@pytest.mark.parametrize("value", ["lots", "autoo", -1, float("inf"), [1], {"n": 1}])
def test_config_rejects_other_gpu_values(value: Any) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(sweep(gpu=value))
    msg = str(err.value)
    assert "resources.gpu: expected a number of GPUs greater than or equal to 0" in msg
    assert "or auto" in msg and "found" in msg


def test_config_file_gpu_auto(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("method: random\nmetric: {name: loss}\ntrainer: x:y\n"
                    "parameters: {x: {values: [1]}}\nresources:\n  gpu: auto\n")
    assert load_config(path).resources.gpu == "auto"
    path.write_text(path.read_text().replace("gpu: auto", "gpu: half"))
    with pytest.raises(ConfigError, match=r"s.yaml:6: resources.gpu: expected .* found 'half'"):
        load_config(path)


# -- the Ray backend with a fake ray ---------------------------------------------------------
class FakeRef:
    def __init__(self, actor: FakeActor, job: TrialJob, measure: bool) -> None:
        self.actor, self.job, self.measure = actor, job, measure
        self.result: Any = None
        self.done = False


class FakeMethod:
    def __init__(self, actor: FakeActor) -> None:
        self.actor = actor

    def remote(self, job: TrialJob, measure: bool = False) -> FakeRef:
        ref = FakeRef(self.actor, job, measure)
        self.actor.ray.refs.append(ref)
        return ref


class FakeActor:
    def __init__(self, ray: FakeRay, options: dict[str, Any]) -> None:
        self.ray, self.options, self.killed = ray, options, False
        self.run = FakeMethod(self)


class FakeRay(types.ModuleType):
    """The few calls RayBackend makes, recorded; trials finish when a test says so."""

    def __init__(self, gpus: int = 2) -> None:
        super().__init__("ray")
        self.gpus = gpus
        self.actors: list[FakeActor] = []
        self.refs: list[FakeRef] = []
        self.exceptions = types.SimpleNamespace(
            RayActorError=type("RayActorError", (Exception,), {}),
            RayTaskError=type("RayTaskError", (Exception,), {}),
            WorkerCrashedError=type("WorkerCrashedError", (Exception,), {}))

    def is_initialized(self) -> bool:
        return True

    def cluster_resources(self) -> dict[str, float]:
        return {"CPU": 16.0, **({"GPU": float(self.gpus)} if self.gpus else {})}

    def remote(self, cls: type) -> Any:
        fake = self

        class Remote:
            def options(self, **options: Any) -> Any:
                return types.SimpleNamespace(remote=lambda spec: fake._actor(options))

        return Remote()

    def _actor(self, options: dict[str, Any]) -> FakeActor:
        actor = FakeActor(self, options)
        self.actors.append(actor)
        return actor

    def wait(self, refs: list[FakeRef], num_returns: int = 1, timeout: float | None = None):
        ready = [r for r in refs if r.done][:num_returns]
        return ready, [r for r in refs if r not in ready]

    def get(self, ref: FakeRef) -> Any:
        return ref.result

    def kill(self, actor: FakeActor, no_restart: bool = True) -> None:
        actor.killed = True

    def shutdown(self) -> None:
        pass

    def finish(self, number: int, peak_gib: float | None, state: str = "complete",
               error: str | None = None) -> None:
        ref = next(r for r in self.refs if r.job.number == number)
        outcome = TrialOutcome(number, state, 1.0 if state == "complete" else None, error=error)
        usage = GpuUsage(int(peak_gib * GIB), GPU80) if peak_gib is not None else None
        ref.result, ref.done = (outcome, usage), True

    def actor_of(self, number: int) -> FakeActor:
        return next(r.actor for r in self.refs if r.job.number == number)

    def running(self) -> list[FakeActor]:
        return [r.actor for r in self.refs if not r.done]


@pytest.fixture
def fake_ray(monkeypatch) -> FakeRay:
    ray = FakeRay()
    monkeypatch.setitem(sys.modules, "ray", ray)
    monkeypatch.setitem(sys.modules, "ray.exceptions", ray.exceptions)
    return ray


def backend(parallel: int, inventory: dict[int, int] | None = None, **resources: Any):
    from hpo.backends.ray_backend import RayBackend
    from hpo.execute import RunnerSpec

    spec = RunnerSpec(config={}, storage="sqlite:///unused.db", study="s")
    return RayBackend(spec, parallel, resources=Resources(**resources),
                      gpu_inventory=inventory)


def job(n: int) -> TrialJob:
    return TrialJob(n, n, {"x": n})


def claim(b: Any, numbers: itertools.count) -> list[int]:
    """Submit trials while the backend says it has room (as the loop does, no prefetch)."""
    got = []
    while b.free_slots() > 0:
        n = next(numbers)
        b.submit(job(n))
        got.append(n)
    return got


def test_ray_backend_packs_by_measured_memory(fake_ray: FakeRay) -> None:
    b = backend(4, {0: GPU80, 1: GPU80}, gpu="auto", cpu=2)
    shares = [a.options["num_gpus"] for a in fake_ray.actors]
    assert shares == [1.0, 1.0]  # one measuring actor per GPU, a whole GPU each
    assert fake_ray.actors[0].options == {"num_cpus": 2.0, "num_gpus": 1.0, "max_restarts": 0,
                                          "max_concurrency": 1}
    numbers = itertools.count()
    assert claim(b, numbers) == [0, 1] and b.free_slots() == 0
    assert all(r.measure for r in fake_ray.refs)

    fake_ray.finish(0, peak_gib=10)  # 12 GiB estimated: two a GPU (parallel 4 on 2 GPUs)
    [done] = b.poll(0)
    assert done.outcome.number == 0 and fake_ray.actor_of(0).killed  # 1.0 is stale now
    assert b.packer.fraction() == 0.5
    assert claim(b, numbers) == [2, 3]  # GPU 1 is still held by trial 1
    assert [a.options["num_gpus"] for a in fake_ray.running()] == [1.0, 0.5, 0.5]

    fake_ray.finish(1, peak_gib=9)
    b.poll(0)
    assert claim(b, numbers) == [4, 5]
    live = fake_ray.running()
    assert [a.options["num_gpus"] for a in live] == [0.5] * 4 and b.free_slots() == 0
    assert sum(a.options["num_gpus"] for a in live) <= 2  # never more than the 2 GPUs

    fake_ray.finish(2, peak_gib=10)
    b.poll(0)
    assert claim(b, numbers) == [6]  # its 0.5 actor is reused
    assert len(fake_ray.actors) == 6 and len(fake_ray.running()) == 4
    b.stop()
    assert all(a.killed for a in fake_ray.actors)


def test_ray_backend_stops_when_one_trial_does_not_fit(fake_ray: FakeRay) -> None:
    b = backend(2, {0: GPU80}, gpu="auto")
    b.submit(job(0))
    fake_ray.finish(0, peak_gib=78, state="failed",
                    error="OutOfMemoryError: CUDA out of memory. Tried to allocate 4.00 GiB")
    with pytest.raises(GpuDoesNotFit, match="trial 0 ran out of GPU memory alone"):
        b.poll(0)
    assert all(a.killed for a in fake_ray.actors) and b.in_flight() == []


def test_ray_backend_without_gpus_says_so(fake_ray: FakeRay) -> None:
    fake_ray.gpus = 0
    with pytest.raises(BackendError, match="needs GPUs, and the Ray cluster has none"):
        backend(2, gpu="auto")


def test_ray_backend_fixed_fraction_is_unchanged(fake_ray: FakeRay) -> None:
    b = backend(4, gpu=0.25)
    assert [a.options["num_gpus"] for a in fake_ray.actors] == [0.25] * 4
    assert b.packer is None and b.free_slots() == 4


def test_ray_backend_lost_trial_frees_its_gpu(fake_ray: FakeRay) -> None:
    b = backend(1, {0: GPU80}, gpu="auto")
    b.submit(job(0))
    ref = fake_ray.refs[0]
    ref.done = True
    ref.result = None

    def died(r: FakeRef) -> Any:
        raise fake_ray.exceptions.RayActorError("The actor died unexpectedly")

    fake_ray.get = died
    [done] = b.poll(0)
    assert done.lost and b.packer.placed() == 0 and b.free_slots() == 1


# -- a real local Ray with two logical GPUs --------------------------------------------------
TRAINER = '''
import os, time
import ray

def train(params, ctx):
    start = time.time()
    time.sleep(float(params["seconds"]))
    share = ray.get_runtime_context().get_assigned_resources().get("GPU")
    # a made-up 20 GiB peak on an 80 GiB GPU (what hpo.gpu_memory would measure on one)
    ctx.set_attrs(peak_gpu_mem_bytes=20 * 2**30, gpu_total_bytes=80 * 2**30, gpu_share=share,
                  cuda_visible=os.environ.get("CUDA_VISIBLE_DEVICES"), t0=start,
                  t1=time.time())
    return {"loss": float(params["x"])}
'''

DRIVER = '''
import json, os, sys
import ray
ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, logging_level="WARNING",
         log_to_driver=False)
import hpo
from hpo.tracking import TrackingStore
storage = sys.argv[1]
result = hpo.run_sweep({
    "name": "auto", "method": "random", "metric": {"name": "loss"}, "seed": 1,
    "parameters": {"x": {"min": 0.0, "max": 1.0}, "seconds": {"value": 2.0}},
    "trainer": "fakegpu:train", "backend": "ray", "parallel": 4,
    "resources": {"cpu": 0.5, "gpu": "auto"}, "storage": storage, "budget": {"trials": 8},
})
rows = [dict(number=t.number, state=t.state, device=t.device, **t.attrs)
        for t in TrackingStore(storage).trials("auto")]
print("ROWS " + json.dumps(rows))
ray.shutdown()
'''


@pytest.mark.ray
def test_sweep_on_ray_with_logical_gpus(tmp_path: Path) -> None:
    (tmp_path / "fakegpu.py").write_text(textwrap.dedent(TRAINER))
    (tmp_path / "driver.py").write_text(textwrap.dedent(DRIVER))
    env = {**__import__("os").environ, "RAY_AUTH_MODE": "disabled",
           "PYTHONPATH": f"{REPO}:{tmp_path}"}
    run = subprocess.run([sys.executable, "driver.py", f"sqlite:///{tmp_path / 'hpo.db'}"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    line = next((x for x in run.stdout.splitlines() if x.startswith("ROWS ")), None)
    assert run.returncode == 0 and line, run.stdout[-3000:] + run.stderr[-5000:]
    rows = sorted(json.loads(line[5:]), key=lambda r: r["t0"])
    assert len(rows) == 8 and {r["state"] for r in rows} == {"complete"}
    first, later = rows[:2], rows[2:]
    # the first two ran alone on a GPU each, to be measured; the rest at 0.5 a GPU
    assert [r["gpu_share"] for r in first] == [1.0, 1.0]
    assert {r["cuda_visible"] for r in first} == {"0", "1"}
    assert all(r["gpu_share"] == 0.5 for r in later)
    assert all(r["device"].startswith("cuda:0 (GPU ") for r in rows)
    for r in first:  # nothing ran beside a measuring trial on its GPU
        assert not [o for o in rows if o is not r and o["cuda_visible"] == r["cuda_visible"]
                    and o["t0"] < r["t1"] and r["t0"] < o["t1"]], r
    for gpu in ("0", "1"):  # never more than two at once on one GPU
        assert most_at_once([r for r in rows if r["cuda_visible"] == gpu]) <= 2, gpu
    assert max(most_at_once([r for r in rows if r["cuda_visible"] == g]) for g in "01") == 2
    assert {r["peak_gpu_mem_bytes"] for r in rows} == {20 * GIB}


def most_at_once(rows: list[dict[str, Any]]) -> int:
    events = sorted([(r["t0"], 1) for r in rows] + [(r["t1"], -1) for r in rows])
    now = peak = 0
    for _, delta in events:
        now += delta
        peak = max(peak, now)
    return peak
