"""What the demo generators share: parameter checks, and writing / reusing a corpus atomically.

A corpus is written into a temporary sibling directory (``.<name>.partial-<tag>``) and renamed into
place at the end, so ``out_dir`` is always either absent, a complete corpus, or untouched. Its
``corpus.json`` (written last) holds ``{"params": ..., **extra}``; ``params["kind"]`` names the
generator, and ``params`` as a whole is what :func:`is_complete` compares to decide whether an existing
corpus can be reused.

Each generator module describes its corpus once as a :class:`DemoCorpus` (its name, generator version,
writer and list of required files) over a :class:`CorpusParams` dataclass of validated parameters; its
public ``generate_*`` and ``ensure_*`` functions validate their arguments and call
:meth:`DemoCorpus.generate` / :meth:`DemoCorpus.ensure`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from tuner.errors import DataError

__all__ = [
    "MARKER",
    "SPLITS",
    "CorpusParams",
    "CountedParams",
    "DemoCorpus",
    "check_between",
    "check_counts",
    "check_int",
    "check_ints",
    "check_pair",
    "check_replaceable",
    "check_seed",
    "is_complete",
    "read_marker",
    "write_corpus_atomically",
]

MARKER = "corpus.json"
"""Name of the completion marker written last into every generated corpus."""
SPLITS: tuple[str, ...] = ("train", "dev", "test")
"""Splits of every demo corpus, in generation order (a split's index seeds its random generators)."""
MAX_COUNT = 10_000
"""Largest number of files (or mixtures) per split."""


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


# ----------------------------------------------------------------------------------- parameters


def check_int(name: str, value: Any) -> int:
    """``value`` as an ``int``; ValueError unless it is an integer (Python or numpy; bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


def check_ints(**values: Any) -> dict[str, int]:
    """Every keyword as an ``int`` (see :func:`check_int`), checked in the order given."""
    return {name: check_int(name, value) for name, value in values.items()}


def check_seed(seed: int) -> None:
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")


def check_between(name: str, value: float, low: float, high: float, unit: str = "") -> None:
    """ValueError unless ``low <= value <= high``; ``unit`` (e.g. ``" Hz"``) follows the bounds in the message."""
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}{unit}, got {value}")


def check_counts(n_train: int, n_dev: int, n_test: int) -> None:
    """Each split's number of files must lie in ``[1, MAX_COUNT]``."""
    for name, value in (("n_train", n_train), ("n_dev", n_dev), ("n_test", n_test)):
        check_between(name, value, 1, MAX_COUNT)


def check_pair(
    name: str, values: Sequence[float], low: float, high: float, what: str = "numbers"
) -> tuple[float, float]:
    """A ``(min, max)`` pair of floats with ``low <= min <= max <= high`` (bounds are printed as given)."""
    try:
        a, b = (float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (min, max) pair of {what}, got {values!r}") from None
    if not low <= a <= b <= high:
        raise ValueError(f"{name} must satisfy {low} <= min <= max <= {high}, got {values!r}")
    return a, b


@dataclass(frozen=True)
class CorpusParams:
    """Validated parameters of a generator; subclasses add their fields (all JSON-serialisable)."""

    seed: int

    def settings(self) -> dict[str, Any]:
        """Module-level settings that also shape the corpus (e.g. speed factors), recorded in the marker."""
        return {}

    def to_json(self) -> dict[str, Any]:
        """The fields and :meth:`settings`, tuples as lists: the marker's ``params`` less kind and version."""
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)} | self.settings()
        return {name: list(value) if isinstance(value, tuple) else value for name, value in values.items()}


@dataclass(frozen=True)
class CountedParams(CorpusParams):
    """Parameters of a corpus with a given number of files (or mixtures) per split."""

    n_train: int
    n_dev: int
    n_test: int

    def count(self, split: str) -> int:
        return {"train": self.n_train, "dev": self.n_dev, "test": self.n_test}[split]


P = TypeVar("P", bound=CorpusParams)


@dataclass(frozen=True)
class DemoCorpus(Generic[P]):
    """One kind of demo corpus: how it is written and when an existing one can be reused.

    ``write(tmp_dir, params, out_dir)`` fills the temporary directory (``out_dir`` is only for log lines)
    and returns the marker's extra entries; ``required_files(params)`` lists the files (relative paths) a
    complete corpus holds besides its marker; ``check(out_dir, params)``, if given, is a further test that a
    corpus holding all of them is complete (e.g. that its lists name every file).
    """

    name: str
    """Short name: the marker's kind is ``tuner-demo-<name>``, log lines start ``demo <name> corpus:``."""
    version: int
    """Generator version, in the marker: bump it when the generated content changes, so ensure regenerates."""
    logger: logging.Logger
    write: Callable[[Path, P, Path], Mapping[str, Any] | None]
    required_files: Callable[[P], Iterable[str]]
    check: Callable[[Path, P], bool] | None = None

    @property
    def kind(self) -> str:
        return f"tuner-demo-{self.name}"

    def marker_params(self, params: P) -> dict[str, Any]:
        """The ``params`` entry of the marker: kind, version and ``params.to_json()``."""
        return {"kind": self.kind, "version": self.version, **params.to_json()}

    def is_complete(self, out_dir: Path, params: P) -> bool:
        """True if ``out_dir`` holds a complete corpus made with ``params`` by this version of the generator."""
        if not is_complete(out_dir, self.marker_params(params), self.required_files(params)):
            return False
        return self.check is None or self.check(out_dir, params)

    def generate(self, out_dir: str | Path, params: P) -> Path:
        """(Re)generate the corpus in ``out_dir`` (see :func:`write_corpus_atomically`); return ``out_dir``."""
        out_dir = Path(out_dir)
        return write_corpus_atomically(
            out_dir, self.marker_params(params), lambda root: self.write(root, params, out_dir)
        )

    def ensure(self, out_dir: str | Path, params: P) -> Path:
        """Return ``out_dir`` if it holds a complete corpus made with ``params``, else :meth:`generate` it."""
        out_dir = Path(out_dir)
        if self.is_complete(out_dir, params):
            self.logger.info("demo %s corpus: reusing %s (seed %d)", self.name, out_dir, params.seed)
            return out_dir
        return self.generate(out_dir, params)
