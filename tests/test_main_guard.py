"""The README's Python example as a plain script: without a main guard it fails fast with the
fix (it hung before, printing multiprocessing tracebacks); with the guard it runs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

BODY = """
import hpo

def train(params, ctx):
    for step in range(1, 4):
        loss = (params["x"] - 2) ** 2 + 1 / step
        ctx.report({"loss": loss}, step=step)
    return {"loss": loss}

def main():
    result = hpo.run_sweep(
        {"method": "tpe", "metric": {"name": "loss"}, "name": "quad",
         "parameters": {"x": {"min": -5.0, "max": 5.0}}, "storage": STORAGE},
        objective=train, trials=4, parallel=2)
    print("best", result.best_value, result.counts["complete"])
"""


def _run(tmp_path: Path, guarded: bool) -> tuple[subprocess.CompletedProcess, float]:
    call = 'if __name__ == "__main__":\n    main()\n' if guarded else "main()\n"
    script = tmp_path / "quad.py"
    storage = f"sqlite:///{tmp_path / 'hpo.db'}"
    script.write_text(f"STORAGE = {storage!r}\n" + textwrap.dedent(BODY) + call)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    return proc, time.monotonic() - t0


def test_script_without_main_guard_fails_fast_with_the_fix(tmp_path):
    proc, took = _run(tmp_path, guarded=False)
    assert proc.returncode != 0
    assert 'if __name__ == "__main__":' in proc.stderr, proc.stderr[-2000:]
    assert "bootstrapping phase" not in proc.stderr  # no multiprocessing tracebacks
    assert took < 30


def test_script_with_main_guard_runs(tmp_path):
    proc, _ = _run(tmp_path, guarded=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-1] == "4"
