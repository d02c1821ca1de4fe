"""Progress bars shared by the toy generators and converters."""

from __future__ import annotations

import logging

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class ProgressWriter:
    """A rich progress bar counting written events.

    It stays quiet when not on a terminal and when hepsieve's logging is above INFO (``-q``).
    """

    def __init__(self, total: int, description: str):
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            transient=True,
            disable=not logging.getLogger("hepsieve").isEnabledFor(logging.INFO),
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
