"""Heavy dependencies are extras: the core imports none of them, and a missing one is named."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_core_imports_no_heavy_dependency():
    code = ("import sys, hpo, hpo.cli, hpo.sweep, hpo.agent, hpo.reporting; "
            "print(sorted(m for m in ('ray', 'torch', 'transformers', 'peft', 'mlflow', "
            "'optuna_dashboard', 'trainers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout
    assert out.strip() == "[]"


def test_extras_and_packages():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    deps = " ".join(meta["project"]["dependencies"])
    for heavy in ("ray", "torch", "transformers", "peft", "mlflow", "datasets"):
        assert heavy not in deps
    extras = meta["project"]["optional-dependencies"]
    assert {"ray", "trainers", "mlflow", "dashboard", "all", "cpu"} <= set(extras)
    include = meta["tool"]["setuptools"]["packages"]["find"]["include"]
    assert not any(p.startswith("examples") for p in include)  # not a top-level package


def test_missing_ray_names_the_extra(monkeypatch):
    from hpo.backends.ray_backend import init_ray
    from hpo.errors import BackendError

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(BackendError, match=r"hpo\[ray\]"):
        init_ray()


def test_missing_torch_names_the_extra(monkeypatch):
    from hpo.config import parse_config
    from hpo.errors import TrainerError
    from hpo.trainer_ref import resolve

    for name in [m for m in sys.modules if m == "trainers" or m.startswith("trainers.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torch", None)
    config = parse_config({"method": "random", "metric": {"name": "loss"}, "trainer": "lora",
                           "parameters": {"lr": {"min": 1e-4, "max": 1e-2}}})
    with pytest.raises(TrainerError, match=r"hpo\[trainers\]"):
        resolve(config)
