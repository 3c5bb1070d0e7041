"""Keep transformers/peft/torch warnings out of the sweep's output: record them on the trial.

Eight trials that each print the same deprecation notices and load reports bury the sweep's
progress. While a trial runs, the Python warnings that the filters in force would print and the
WARNING-and-up records of the ML libraries' loggers are caught instead, counted by message,
and stored on the trial as ``library_warnings`` (a list of ``"Category: message (xN)"``
strings, most frequent first) and ``library_warnings_total``; ``hpo trials NAME --format json``
shows them under ``attrs``. They are also re-logged at DEBUG on the ``hpo_trainers.library`` logger.
``show_library_warnings: true`` turns the capture off.

Process-wide state (the warnings filters, the libraries' logger handlers) is swapped for the
trial and restored afterwards, so it assumes one trial at a time per process, which is how
every hpo placement runs trials.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

LIBRARY_LOGGERS = ("transformers", "peft", "accelerate", "datasets", "bitsandbytes", "torch")
MAX_KEPT = 20  # distinct messages stored on the trial
MAX_CHARS = 300  # per message
log = logging.getLogger("hpo_trainers.library")


@dataclass
class Captured:
    """Messages seen while capturing, counted by (category, text)."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add(self, category: str, text: str) -> None:
        text = " ".join(str(text).split())
        if len(text) > MAX_CHARS:
            text = text[: MAX_CHARS - 3] + "..."
        self.counts[(category, text)] += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> list[str]:
        """Distinct messages, most frequent first, at most ``MAX_KEPT``."""
        out = []
        for (category, text), n in self.counts.most_common(MAX_KEPT):
            out.append(f"{category}: {text}" + (f" (x{n})" if n > 1 else ""))
        return out


class _Handler(logging.Handler):
    def __init__(self, captured: Captured) -> None:
        super().__init__(logging.WARNING)
        self.captured = captured

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not fail the trial
            text = str(record.msg)
        self.captured.add(f"{record.name} {record.levelname.lower()}", text)


@contextlib.contextmanager
def library_output(show: bool = False) -> Iterator[Captured]:
    """Capture warnings and library log records (WARNING and up) for the block."""
    captured = Captured()
    if show:
        yield captured
        return
    _configure_transformers_logging()
    handler = _Handler(captured)
    saved = []
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, list(logger.handlers), logger.propagate))
        logger.handlers = [handler]
        logger.propagate = False
    try:
        with warnings.catch_warnings():  # the filters in force still decide what is shown

            def show(message, category, filename, lineno, file=None, line=None) -> None:
                captured.add(category.__name__, str(message))

            warnings.showwarning = show
            yield captured
    finally:
        for logger, handlers, propagate in saved:
            logger.handlers = handlers
            logger.propagate = propagate
        for line in captured.summary():
            log.debug("%s", line)


def _configure_transformers_logging() -> None:
    """Let transformers attach its own handler now, so it is not attached mid-capture."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.get_logger("transformers")


def record_on_trial(ctx: object, captured: Captured) -> None:
    """Store what was captured on the trial (nothing when there was nothing)."""
    if not captured.total:
        return
    set_attrs = getattr(ctx, "set_attrs", None)
    if callable(set_attrs):
        set_attrs(library_warnings=captured.summary(), library_warnings_total=captured.total)
