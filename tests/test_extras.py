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
            "'optuna_dashboard', 'hpo_trainers') if m in sys.modules))")
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
    setuptools = meta["tool"]["setuptools"]
    packages = setuptools["packages"]
    # only hpo and hpo_trainers at the top level: nothing generic (examples, trainers, wandb)
    assert {p.split(".")[0] for p in packages} == {"hpo", "hpo_trainers"}
    assert setuptools["package-dir"] == {"hpo_trainers": "trainers"}
    # every folder of the two packages that is a package is listed (a new one is not lost)
    found = {".".join(d.relative_to(REPO).parts) for d in (REPO / "hpo").rglob("*")
             if (d / "__init__.py").is_file()} | {"hpo"}
    assert found == {p for p in packages if p.startswith("hpo.")} | {"hpo"}
    assert not [d for d in (REPO / "trainers").iterdir() if (d / "__init__.py").is_file()]


def test_a_built_wheel_holds_only_hpo_and_hpo_trainers(tmp_path):
    """What `pip install hpo` puts at the top level of site-packages: the wheel's folders."""
    import zipfile

    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "-w", str(tmp_path), str(REPO)],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode and "No module named" in proc.stderr and "setuptools" in proc.stderr:
        pytest.skip("setuptools is not installed in this environment")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("hpo-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"hpo", "hpo_trainers"}, tops
    assert "hpo_trainers/lora.py" in names and "hpo/reporting/page.html.j2" in names
    assert "hpo/wandb_shim/wandb/__init__.py" in names


def test_the_legacy_trainer_names_still_resolve():
    from hpo.trainer_ref import _LEGACY, import_ref

    pytest.importorskip("torch")
    for old, new in _LEGACY.items():
        assert import_ref(f"{old}:train") is import_ref(f"{new}:train")


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

    for name in [m for m in sys.modules if m == "hpo_trainers" or m.startswith("hpo_trainers.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torch", None)
    config = parse_config({"method": "random", "metric": {"name": "loss"}, "trainer": "lora",
                           "parameters": {"lr": {"min": 1e-4, "max": 1e-2}}})
    with pytest.raises(TrainerError, match=r"hpo\[trainers\]"):
        resolve(config)
