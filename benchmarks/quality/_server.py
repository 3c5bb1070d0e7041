"""A tiny JSON-lines problem server, run by a benchmark package's own virtualenv.

Some benchmark packages pin versions that clash with hpo's environment (mf-prior-bench wants
numpy 1.x, yahpo-gym wants ConfigSpace 0.6 and numpy<2). They live in their own venvs under
benchmarks/.venvs/ and are reached through this script, started as a subprocess:

    benchmarks/.venvs/mfpbench/bin/python benchmarks/quality/_server.py mfh mfh3_good
    benchmarks/.venvs/yahpo/bin/python benchmarks/quality/_server.py yahpo 167168 DATA_PATH

Protocol: one JSON object a line in, one out. ``{"op": "info"}`` -> ``{"max_fidelity", "optimum",
"minimize"}``; ``{"op": "curves", "configs": [...]}`` -> ``{"values": [[v_1 .. v_max], ...]}``,
the metric at fidelities 1..max_fidelity for each config. Only stdlib + the package: this file
must not import hpo (it runs in the other venv).
"""

from __future__ import annotations

import json
import sys


def _mfh(name: str):
    import mfpbench

    bench = mfpbench.get(name, seed=1)
    lo, hi, _ = bench.fidelity_range
    opt = bench.query(bench.optimum, at=hi).value.value

    def curves(configs):
        out = []
        for config in configs:
            traj = bench.trajectory({k: float(v) for k, v in config.items()}, frm=lo, to=hi)
            out.append([float(r.value.value) for r in traj])
        return out

    return {"max_fidelity": int(hi), "optimum": float(opt), "minimize": True}, curves


def _yahpo(instance: str, data: str):
    import atexit
    import os
    import shutil
    import tempfile
    import warnings

    warnings.filterwarnings("ignore")
    # yahpo keeps its data path in ~/.config/yahpo_gym, rewritten (first empty) by init_config:
    # two servers starting at once (run.py's worker processes) race on it and one fails. Each
    # server gets its own settings file instead (read when yahpo_gym is imported).
    tmp = tempfile.mkdtemp(prefix="yahpo-server-")
    atexit.register(shutil.rmtree, tmp, True)
    os.environ["YAHPO_LOCAL_CONFIG"] = os.path.join(tmp, "yahpo_gym")
    from yahpo_gym import benchmark_set, local_config

    local_config.init_config()
    local_config.set_data_path(data)
    stdout, sys.stdout = sys.stdout, sys.stderr  # yahpo prints citations on import/open
    try:
        bench = benchmark_set.BenchmarkSet("lcbench", instance=instance)
    finally:
        sys.stdout = stdout
    stats = os.path.join(data, "global_statistics", "instance_target_statistics.csv")
    best = None
    with open(stats) as fh:
        for line in fh:
            metric, stat, value, scenario, inst = line.strip().split(",")
            if (scenario, inst, metric, stat) == ("lcbench", instance, "val_accuracy", "max"):
                best = float(value)
    max_fid = 52

    def curves(configs):
        xs = []
        for config in configs:
            c = dict(config, OpenML_task_id=instance)
            xs += [dict(c, epoch=e) for e in range(1, max_fid + 1)]
        res = bench.objective_function(xs)
        vals = [float(r["val_accuracy"]) for r in res]
        return [vals[i * max_fid:(i + 1) * max_fid] for i in range(len(configs))]

    return {"max_fidelity": max_fid, "optimum": best, "minimize": False}, curves


def main() -> None:
    kind = sys.argv[1]
    if kind == "mfh":
        info, curves = _mfh(sys.argv[2])
    elif kind == "yahpo":
        info, curves = _yahpo(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(f"unknown problem kind {kind!r}")
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        if req["op"] == "info":
            out = info
        elif req["op"] == "curves":
            out = {"values": curves(req["configs"])}
        else:
            out = {"error": f"unknown op {req['op']!r}"}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
