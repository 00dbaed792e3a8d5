"""Atomic writing of generated demo corpora, shared by the demo generators.

A corpus is written into a temporary sibling directory (``.<name>.partial-<tag>``) and renamed into
place at the end, so ``out_dir`` is always either absent, a complete corpus, or untouched. Its
``corpus.json`` (written last) holds ``{"params": ..., **extra}``; ``params["kind"]`` names the
generator, and ``params`` as a whole is what :func:`is_complete` compares to decide whether an existing
corpus can be reused.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from tuner.errors import DataError

__all__ = ["MARKER", "read_marker", "is_complete", "check_replaceable", "write_corpus_atomically"]

MARKER = "corpus.json"
"""Name of the completion marker written last into every generated corpus."""


def read_marker(out_dir: str | Path) -> dict[str, Any] | None:
    """The parsed ``corpus.json`` of ``out_dir``, or None if it is missing or not a JSON object."""
    try:
        marker = json.loads((Path(out_dir) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def is_complete(out_dir: str | Path, params: Mapping[str, Any], required_files: Iterable[str | Path]) -> bool:
    """True if ``out_dir`` holds a corpus made with exactly ``params`` and every ``required_files``
    (paths relative to ``out_dir``) is a file."""
    out_dir = Path(out_dir)
    marker = read_marker(out_dir)
    if marker is None or marker.get("params") != dict(params):
        return False
    return all((out_dir / name).is_file() for name in required_files)


def check_replaceable(out_dir: str | Path, kind: str) -> None:
    """Refuse to replace anything but nothing, an empty directory, or a previous corpus of ``kind``."""
    out_dir = Path(out_dir)
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    if out_dir.is_symlink() or not out_dir.is_dir():
        raise DataError(f"{out_dir}: exists and is not a directory; choose another output directory or remove it.")
    marker = read_marker(out_dir)
    params = marker.get("params") if marker is not None else None
    if any(out_dir.iterdir()) and (not isinstance(params, dict) or params.get("kind") != kind):
        raise DataError(
            f"{out_dir}: directory is not empty and holds no demo corpus of this kind ({kind}: {MARKER} is "
            "missing or names another kind); refusing to overwrite it. Choose another output directory or empty it."
        )


def write_corpus_atomically(
    out_dir: str | Path,
    params: Mapping[str, Any],
    write: Callable[[Path], Mapping[str, Any] | None],
) -> Path:
    """Write a corpus with ``write(tmp_dir)`` and move it to ``out_dir``; return ``out_dir``.

    ``params`` must be JSON-serialisable and hold a ``"kind"`` key. ``write`` fills the (empty, existing)
    temporary directory and may return extra entries for the marker (e.g. statistics); the marker
    ``{"params": params, **extra}`` is written after it returns. An existing ``out_dir`` is replaced only if
    it is empty or a previous corpus of the same kind (else :class:`DataError`); on any failure the
    temporary directory is removed and ``out_dir`` is left as it was.
    """
    kind = params.get("kind")
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"params must hold a non-empty 'kind' string, got {kind!r}")
    out_dir = Path(out_dir)
    check_replaceable(out_dir, kind)
    parent = out_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"  # name only: content stays deterministic
    tmp = parent / f".{out_dir.name}.partial-{tag}"
    tmp.mkdir()
    try:
        extra = dict(write(tmp) or {})
        marker = {"params": dict(params), **extra}
        (tmp / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if out_dir.exists():
            old = parent / f".{out_dir.name}.old-{tag}"
            os.rename(out_dir, old)
            os.rename(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out_dir)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(
            f"{out_dir}: could not write the demo corpus ({exc.strerror or exc}); "
            "check free space and permissions, and that no other process writes there at the same time."
        ) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
