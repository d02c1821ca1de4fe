"""Progress bars shared by the toy generators and converters."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class ProgressWriter:
    """A rich progress bar counting written events (quiet when not on a terminal)."""

    def __init__(self, total: int, description: str):
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            transient=True,
        )
        self._task = self._progress.add_task(description, total=total)

    def __enter__(self) -> ProgressWriter:
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def advance(self, n: int) -> None:
        """Count ``n`` more written events."""
        self._progress.advance(self._task, n)
