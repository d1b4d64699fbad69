"""Progress bars (rich) that degrade to nothing when disabled or not on a terminal."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


class _NullBar:
    def advance(self, n: int = 1) -> None:
        pass

    def update(self, **fields: Any) -> None:
        pass


class _Bar:
    def __init__(self, progress, task) -> None:
        self._p, self._t = progress, task

    def advance(self, n: int = 1) -> None:
        self._p.advance(self._t, n)

    def update(self, **fields: Any) -> None:
        self._p.update(self._t, **fields)


@contextlib.contextmanager
def progress_bar(description: str, total: int | None, unit: str = "items", enabled: bool = True,
                 fields: str = "") -> Iterator[_Bar | _NullBar]:
    """A bar showing count, rate (unit/s), elapsed and ETA; `fields` is extra rich markup with
    {task.fields[...]} placeholders updated through `bar.update(name=value)`."""
    if not enabled:
        yield _NullBar()
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task):  # type: ignore[override]
            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.0f} {unit}/s" if speed else f"- {unit}/s")

    if fields:  # room for the extra fields in an 80-column log: a shorter bar, no counts
        columns = [TextColumn("[bold]{task.description}"), BarColumn(bar_width=12), TaskProgressColumn(),
                   TimeElapsedColumn(), TextColumn(fields)]
    else:
        columns = [TextColumn("[bold]{task.description}"), BarColumn(bar_width=24), MofNCompleteColumn(),
                   TaskProgressColumn(), RateColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
    import re

    defaults = {name: "-" for name in re.findall(r"task\.fields\[(\w+)\]", fields)}
    with Progress(*columns, transient=False) as prog:
        task = prog.add_task(description, total=total, **defaults)
        yield _Bar(prog, task)
