"""A rich progress bar for a sweep: trials done of the budget, counts by state, best value."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class SweepProgress:
    """Progress display; a no-op when disabled (tests, non-interactive API use)."""

    def __init__(self, name: str, budget: int | None, *, enabled: bool = True) -> None:
        self.enabled = enabled
        if not enabled:
            return
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}"),
            TextColumn("best {task.fields[best]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._task = self._progress.add_task(name, total=budget, counts="", best="-")
        self._progress.start()

    def update(self, counts: dict[str, int], best: float | None) -> None:
        if not self.enabled:
            return
        finished = sum(counts.get(k, 0) for k in ("complete", "pruned", "failed"))
        text = (
            f"[green]{counts.get('complete', 0)} ok[/] "
            f"[yellow]{counts.get('pruned', 0)} pruned[/] "
            f"[red]{counts.get('failed', 0)} failed[/] "
            f"{counts.get('running', 0)} running"
        )
        self._progress.update(
            self._task, completed=finished, counts=text,
            best="-" if best is None else f"{best:.6g}",
        )

    def close(self) -> None:
        if self.enabled:
            self._progress.stop()
