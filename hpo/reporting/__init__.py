"""The sweep report: one self-contained HTML file (plotly.js inline, no server, no CDN).

``build_report(name)`` reads the sweep from the tracking store (and, for parameter
importances only, the Optuna study of the same name when the storage has one) and writes
``reports/<name>.html``. Modules: :mod:`~hpo.reporting.data` (load and shape, downsampling),
:mod:`~hpo.reporting.figures` (one plotly figure per function), :mod:`~hpo.reporting.page`
(sections + ``page.html.j2``).
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path

from hpo.reporting import data as _data
from hpo.reporting.page import render
from hpo.storage_url import resolve_url

__all__ = ["build_report", "default_path", "render_html"]


def default_path(name: str) -> Path:
    """``reports/<name>.html`` (characters unsafe in file names replaced by ``_``)."""
    safe = re.sub(r"[^\w.@+=-]+", "_", name).strip("._") or "sweep"
    return Path("reports") / f"{safe}.html"


def render_html(name: str, storage: str | None = None, *, now: datetime | None = None) -> str:
    """The report of sweep ``name`` as HTML text."""
    from hpo.tracking import TrackingStore

    url = resolve_url(storage)
    store = TrackingStore(url)
    try:
        report = _data.load(store, name, now=now)
    finally:
        store.close()
    report.importances, report.importance_note = _data.importances(report, url)
    return render(report)


def build_report(
    name: str,
    storage: str | None = None,
    path: str | os.PathLike[str] | None = None,
) -> Path:
    """Write the HTML report of sweep ``name`` and return its path.

    ``storage`` goes through :func:`hpo.storage_url.resolve_url` (``$HPO_STORAGE``, then
    ``sqlite:///hpo.db``); ``path`` defaults to ``reports/<name>.html`` (folder created).
    A sweep that is still running gets a partial report that says so.
    """
    html = render_html(name, storage)
    out = Path(path) if path is not None else default_path(name)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, out)
    return out
