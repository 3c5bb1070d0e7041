"""Storage credentials never reach the database, a report, a log or the terminal (issue 13).

``mask_url`` on every URL shape users write; ``SweepConfig.to_dict`` and the stored config text
carry the masked URL; a real sweep whose storage URL holds a password leaves no trace of it in
the database file, the report or the command's output; ``$HPO_STORAGE`` and ``hpo k8s``'s
Secret keep the URL out of files.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hpo.config import load_config, parse_config
from hpo.reporting.page import config_text
from hpo.storage_url import mask_text, mask_url, password_of, resolve_url

REPO = Path(__file__).resolve().parents[1]
SECRET = "hunter2-Zq8"


@pytest.mark.parametrize(("url", "masked"), [
    ("postgresql://alice:s3cret@db:5432/hpo", "postgresql://alice:***@db:5432/hpo"),
    ("postgresql+psycopg2://alice:s3cret@db/hpo", "postgresql+psycopg2://alice:***@db/hpo"),
    ("postgresql://:s3cret@db/hpo", "postgresql://:***@db/hpo"),  # empty user name
    ("postgresql://alice:a%2Fb%40c@db/hpo", "postgresql://alice:***@db/hpo"),  # encoded / and @
    ("postgresql://alice:a/b@db/hpo", "postgresql://alice:***@db/hpo"),  # a literal '/'
    ("postgresql://alice:p@ss@db/hpo", "postgresql://alice:***@db/hpo"),  # a literal '@'
    ("postgresql://alice:my pass@db/hpo", "postgresql://alice:***@db/hpo"),  # a space
    ("postgresql://alice@db/hpo?password=s3cret&sslmode=require",
     "postgresql://alice@db/hpo?password=***&sslmode=require"),
    ("postgresql://alice:s3cret@db/hpo?sslpassword=s3cret",
     "postgresql://alice:***@db/hpo?sslpassword=***"),
    ("postgresql://alice:s3cret@[::1]:5432/hpo", "postgresql://alice:***@[::1]:5432/hpo"),
    ("sqlite:////tmp/hpo.db", "sqlite:////tmp/hpo.db"),  # nothing to hide: unchanged
    ("postgresql://alice@db/hpo", "postgresql://alice@db/hpo"),
])
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    assert mask_url(masked) == masked  # masking twice changes nothing


def test_mask_url_in_text_and_log_lines() -> None:
    text = ("storage: postgresql://u:p/w@h:5/db  # shared\n"
            "hook: 'https://bot:tok3n@hooks.example.com/x'\n"
            "flow: {a: mysql://:pw9@c/d, b: x@y}\n"
            "error: could not connect to postgresql://u:pw7@h/db?password=pw8: refused\n")
    out = mask_url(text)
    for secret in ("p/w", "tok3n", "pw9", "pw7", "pw8"):
        assert secret not in out
    assert "u:***@h:5/db  # shared" in out and "b: x@y" in out and out.count("\n") == 4


@pytest.mark.parametrize("garbage", [None, "", "://", "a://b:c@", "not a url", b"\xff\x00",
                                     12345, "postgresql://[::1", "%" * 50, "@" * 1000,
                                     "a://:" * 5000, "x" * 100_000])
def test_mask_url_never_raises_and_stays_fast(garbage: object) -> None:
    start = time.monotonic()
    out = mask_url(garbage)  # type: ignore[arg-type]
    assert isinstance(out, str) and time.monotonic() - start < 2


def test_mask_text_knows_the_storage_url() -> None:
    url = f"postgresql://u:{SECRET} x@h/db"  # a space: no URL pattern can tell where it ends
    text = f'storage: "{url}"\nother: "{url}/2"\n'
    assert password_of(url) == f"{SECRET} x"
    out = mask_text(text, url)
    assert SECRET not in out and out.count("\n") == 2 and "u:***@h/db" in out
    assert mask_text("plain: text\n", None) == "plain: text\n"
    assert password_of("not a url") is None and password_of(None) is None


SWEEP = """\
name: pw
method: random
metric: {{name: loss}}
parameters:
  x: {{min: 0.0, max: 1.0}}
trainer: examples.objectives:noop
storage: {storage}
budget: {{trials: 2}}
"""


def test_config_to_dict_and_text_carry_the_masked_url(tmp_path: Path) -> None:
    url = f"postgresql+psycopg2://alice:{SECRET}@db:5432/hpo"
    path = tmp_path / "s.yaml"
    path.write_text(SWEEP.format(storage=url))
    config = load_config(path)
    assert config.storage == url  # the sweep still connects with it
    assert config.to_dict()["storage"] == "postgresql+psycopg2://alice:***@db:5432/hpo"
    assert SECRET not in str(config.to_dict()) and SECRET not in (config.text or "")
    assert "alice:***@db" in (config.text or "")
    # overrides keep the real URL; a storage override replaces it
    assert config.with_overrides(trials=5).storage == url
    other = f"postgresql://bob:{SECRET}x@h/db"
    assert config.with_overrides(storage=other).storage == other
    assert SECRET not in str(config.with_overrides(storage=other).to_dict())
    # what to_dict gives parses again (with the masked URL)
    assert parse_config(config.to_dict()).to_dict() == config.to_dict()


def test_report_config_text_masks_old_records() -> None:
    """Sweeps recorded before masking may hold a password in their stored text or config."""
    url = f"postgresql://alice:{SECRET}@db/hpo"
    assert SECRET not in config_text(f"storage: {url}\n", None)
    assert SECRET not in config_text(None, {"storage": url, "method": "tpe"})
    spaced = f"postgresql://alice:{SECRET} x@db/hpo"
    assert SECRET not in config_text(f'storage: "{spaced}"\n', {"storage": spaced})


def test_a_real_sweep_stores_no_password(tmp_path: Path) -> None:
    """SQLite takes (and ignores) a ?password= query: the whole path through run_sweep, the
    tracking store, the journal and the report must hide it."""
    from hpo import run_sweep
    from hpo.reporting import build_report

    db = tmp_path / "hpo.db"
    url = f"sqlite:///{db}?password={SECRET}"
    path = tmp_path / "s.yaml"
    path.write_text(SWEEP.format(storage=url))
    with pytest.warns(Warning):  # SQLAlchemy: pysqlite ignores the query argument
        result = run_sweep(path)
        other = run_sweep(path, name="pw2", storage=url + "2")  # the Python API's override
        report = build_report("pw", storage=url, path=tmp_path / "r.html")
    assert result.counts.get("complete") == 2 and other.counts.get("complete") == 2
    assert SECRET not in result.storage and "password=***" in result.storage
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("hpo.db*"))
    assert SECRET.encode() not in stored
    html = report.read_text("utf-8")
    assert SECRET not in html and "password=***" in html


def test_hpo_sweep_output_has_no_password(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hpo.db'}?password={SECRET}"
    path = tmp_path / "s.yaml"
    path.write_text(SWEEP.format(storage=url))
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1", "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "hpo.cli", "sweep", str(path), "-o",
                           str(tmp_path / "r.html")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr and "password=***" in proc.stdout
    assert SECRET not in (tmp_path / "r.html").read_text("utf-8")


def test_hpo_storage_env_is_the_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Deployments pass the URL in $HPO_STORAGE (a Kubernetes Secret, a CI secret) instead of
    a file; an explicit URL still wins. A URL without a password uses libpq's PGPASSFILE /
    ~/.pgpass, so no password needs to be in the URL at all."""
    url = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("HPO_STORAGE", url)
    assert resolve_url(None) == url
    assert resolve_url("sqlite:///other.db") == "sqlite:///other.db"
    monkeypatch.setenv("HPO_STORAGE", "postgresql://alice@db/hpo")
    assert resolve_url(None) == "postgresql+psycopg2://alice@db/hpo"


@pytest.mark.parametrize("url", [
    f"postgresql://:{SECRET}@db/hpo",
    f"postgresql://u:{SECRET}/x@db/h",
    f"postgresql://u@db/hpo?password={SECRET}",
])
def test_k8s_reads_the_url_from_a_secret(tmp_path: Path, url: str) -> None:
    """``hpo k8s``: pods get HPO_STORAGE from the Secret; no manifest or note carries the
    password (also with the URL shapes the old masking missed)."""
    from hpo.k8s import manifests_for_file

    path = tmp_path / "k.yaml"
    path.write_text(SWEEP.format(storage=url))
    text, notes = manifests_for_file(path)
    assert SECRET not in text
    docs = [d for d in yaml.safe_load_all(text) if d]
    envs = [e for d in docs if d.get("kind") == "Job"
            for c in d["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])
            if e["name"] == "HPO_STORAGE"]
    assert envs and all(e["valueFrom"]["secretKeyRef"] == {"name": "hpo-storage", "key": "url"}
                        for e in envs)
    assert SECRET not in " ".join(notes)
