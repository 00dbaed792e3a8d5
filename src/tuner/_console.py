"""The one stderr console shared by logging and progress display (so logs print above the bars)."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console


@lru_cache(maxsize=1)
def stderr_console() -> Console:
    from rich.console import Console

    console = Console(stderr=True)
    # logs going to a file or a pipe (CI, a worker's log): long lines stay whole instead of 80 columns
    return console if console.is_terminal else Console(stderr=True, width=200)
