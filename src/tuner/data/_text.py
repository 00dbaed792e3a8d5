"""Reading the text files of a corpus (annotations, trial lists, CSVs) with errors that name them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from tuner.errors import DataError

__all__ = ["reading", "read_text_lines"]


@contextlib.contextmanager
def reading(path: str | Path, kind: str) -> Iterator[None]:
    """Turn the file-system and decoding errors of reading a ``kind`` file into DataErrors naming ``path``."""
    try:
        yield
    except FileNotFoundError:
        raise DataError(f"{path}: {kind} not found; check the path or generate the corpus.") from None
    except IsADirectoryError:
        raise DataError(f"{path}: expected a {kind} but found a directory; fix the path.") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: {kind} is not valid UTF-8 text ({exc.reason}); re-export it as UTF-8.") from None
    except PermissionError as exc:
        raise DataError(f"{path}: cannot read the {kind} ({exc.strerror}); check its permissions.") from None


def read_text_lines(path: str | Path, kind: str) -> list[str]:
    """The lines of a UTF-8 text file (a ``kind`` such as 'RTTM file' or 'trial list')."""
    with reading(path, kind):
        return Path(path).read_text(encoding="utf-8").splitlines()
