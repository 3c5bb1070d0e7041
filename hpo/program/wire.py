"""The wire format between a program trial and hpo: the environment variables that name the
files, and the JSON lines both sides write and read. ``hpo.script_api`` (inside the script) and
the runner (hpo.program.runner) import it; nothing else defines the format."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

METRICS_FILE_ENV = "HPO_METRICS_FILE"
PARAMS_FILE_ENV = "HPO_PARAMS_FILE"


def encode_event(event: Mapping[str, Any]) -> bytes:
    """One JSON line of the metrics file: ``{"metrics": {...}, "step": n}``,
    ``{"summary": {...}}`` or ``{"max_step": n}``."""
    return (json.dumps(event, separators=(",", ":")) + "\n").encode("utf-8")


def _numeric(data: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_numeric(value, name + "."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def _step_of(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and (not math.isfinite(value) or value != int(value)):
        return None
    return int(value)


def parse_stdout_line(line: str, prefix: str | None) -> tuple[dict[str, float], int | None] | None:
    """A metric event from one stdout line, or None when the line is not one.

    Without a prefix: a JSON object with at least one number. With one: the text after the
    prefix. ``"step"`` (a whole number) is the step; non-numeric values are ignored.
    """
    text = line.strip()
    if prefix is not None:
        if not text.startswith(prefix):
            return None
        text = text[len(prefix):].strip()
    if not (text.startswith("{") and text.endswith("}")):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    step = _step_of(data.pop("step", None))
    metrics = _numeric(data)
    return (metrics, step) if metrics else None


def parse_event(line: bytes) -> tuple[str, dict[str, float], int | None] | None:
    """One line of the metrics file -> ("metrics" | "summary" | "max_step", values, step)."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("metrics"), Mapping):
        return "metrics", _numeric(data["metrics"]), _step_of(data.get("step"))
    if isinstance(data.get("summary"), Mapping):
        return "summary", _numeric(data["summary"]), None
    if "max_step" in data:  # hpo.set_max_step(): the step of the trial's last report
        step = _step_of(data["max_step"])
        return ("max_step", {}, step) if step is not None and step >= 1 else None
    return None
