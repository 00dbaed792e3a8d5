"""The consoles tuner prints to: one stderr console shared by logging and progress display (so logs print
above the bars), and stdout for tables. Piped into a file, they keep to ``COLUMNS`` characters (default:
120 for logs, 100 for tables) instead of rich's 80."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["stderr_console", "stdout_console"]

#: widths when the output is not a terminal and ``COLUMNS`` is unset
LOG_WIDTH, TABLE_WIDTH = 120, 100


def _piped_width(default: int) -> int:
    try:
        return max(40, int(os.environ["COLUMNS"]))
    except (KeyError, ValueError):
        return default


@lru_cache(maxsize=1)
def stderr_console() -> Console:
    from rich.console import Console

    console = Console(stderr=True)
    return console if console.is_terminal else Console(stderr=True, width=_piped_width(LOG_WIDTH))


def stdout_console() -> Console:
    """stdout, for tables: the terminal's width, or ``COLUMNS`` (default 100) when piped."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=_piped_width(TABLE_WIDTH))
