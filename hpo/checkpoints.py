"""A trial's checkpoints on disk: what ``ctx.save_checkpoint`` writes and ``load_checkpoint``
reads (pause and resume, hpo.pause).

Layout, under the trial's artifact directory (``artifacts/<sweep>/trial-<N>/checkpoint``; on
Kubernetes or several hosts that directory must be on a shared volume)::

    checkpoint/LATEST          {"kind": "object" | "path", "name": "ckpt-3", "step": 9}
    checkpoint/ckpt-3/state.pkl                  (an object: pickled)
    checkpoint/ckpt-3/<the saved file or dir>     (a path: copied)

A save writes a new ``ckpt-<n>`` first and then replaces ``LATEST`` atomically, so a worker
killed mid-save leaves the previous checkpoint readable; older ones are deleted after.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

LATEST = "LATEST"


class Checkpoints:
    """The checkpoints of one trial, in ``root`` (created on the first save)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def save(self, obj_or_path: Any, step: int | None = None) -> Path:
        """Save an object (pickled) or a file/directory (copied); returns where it went."""
        self.root.mkdir(parents=True, exist_ok=True)
        previous = self._latest()
        n = int(previous["name"].removeprefix("ckpt-")) + 1 if previous else 0
        name = f"ckpt-{n}"
        target = self.root / name
        if target.exists():
            shutil.rmtree(target)
        target.mkdir()
        if isinstance(obj_or_path, (str, os.PathLike)) and Path(obj_or_path).exists():
            source = Path(obj_or_path)
            kind, saved = "path", target / source.name
            if source.is_dir():
                shutil.copytree(source, saved)
            else:
                shutil.copy2(source, saved)
        else:
            kind, saved = "object", target / "state.pkl"
            with open(saved, "wb") as f:
                pickle.dump(obj_or_path, f, protocol=pickle.HIGHEST_PROTOCOL)
        tmp = self.root / f".{LATEST}.{os.getpid()}"
        tmp.write_text(json.dumps({"kind": kind, "name": name, "file": saved.name,
                                   "step": step}))
        os.replace(tmp, self.root / LATEST)
        for old in self.root.glob("ckpt-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
        return saved

    def load(self) -> Any | None:
        """The saved object, or the path of the saved file/directory; None when none."""
        latest = self._latest()
        if latest is None:
            return None
        saved = self.root / latest["name"] / latest["file"]
        if latest["kind"] == "path":
            return saved
        with open(saved, "rb") as f:
            return pickle.load(f)  # noqa: S301 - written by this sweep's own trials

    def step(self) -> int | None:
        """The step the latest checkpoint was saved at (as given to ``save``)."""
        latest = self._latest()
        return None if latest is None else latest.get("step")

    def exists(self) -> bool:
        return self._latest() is not None

    def delete(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def _latest(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.root / LATEST).read_text())
        except (OSError, ValueError):
            return None
