"""A live progress line for ``map()``: done/total, outcome counts and spend. Quiet off a terminal."""

from __future__ import annotations

import sys
import threading
from decimal import Decimal
from types import TracebackType
from typing import Any


class Progress:
    """Thread-safe progress; renders with rich on a terminal, does nothing otherwise."""

    def __init__(self, label: str, *, total: int, enabled: bool | None, budget: str | None = None) -> None:
        self.label = label
        self.budget = budget
        self.total = total
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.counts: dict[str, int] = {"succeeded": 0, "degraded": 0, "failed": 0}
        self.cost = Decimal(0)
        self._lock = threading.Lock()
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[outcomes]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=False,
                refresh_per_second=8,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total, outcomes=self._outcomes())
        return self

    def _outcomes(self) -> str:
        c = self.counts
        paused = c.get("paused", 0) + c.get("queued", 0)
        return (
            f"[green]✓ {c['succeeded']:,}[/] [yellow]~ {c['degraded']:,}[/] [red]✗ {c['failed']:,}[/] "
            + (f"[magenta]⏸ {paused:,}[/] " if paused else "")
            + f"${self.cost:.4f}"
            + (f" of {self.budget}" if self.budget else "")
        )

    def advance(self, status: str, cost: Decimal) -> None:
        with self._lock:
            self.counts[status] = self.counts.get(status, 0) + 1
            self.cost += cost
            if self._bar is not None:
                self._bar.update(self._task, advance=1, outcomes=self._outcomes())

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
