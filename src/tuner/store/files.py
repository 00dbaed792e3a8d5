"""Files tuner writes whole or not at all: trial checkpoints in the artifact folder, `tuner export`'s YAML and
folder, `tuner train`'s checkpoint and metrics.

Each file is written under a temporary name in its own folder (``.NAME.HOST.PID.RANDOM.tmp``), flushed to the
disk (``fsync``), renamed over ``NAME`` (``os.replace``: atomic within a file system) and the folder's entry
flushed too: a reader finds the old file or the whole new one, never part of one, also after a crash or a power
cut. A write that fails removes its temporary file. One that fails because the disk is full, over quota,
read-only or not writable for this user (``ENOSPC``, ``EDQUOT``, ``EROFS``, ``EACCES``, ``EPERM``) raises
:class:`~tuner.errors.ArtifactWriteError`: one line naming the folder, its free space (``shutil.disk_usage``)
and what to do. A process killed mid-write cannot remove its temporary file: :func:`sweep` removes those of
this machine's dead processes (the artifact folder is swept when a worker opens it).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tuner.errors import ArtifactWriteError

__all__ = [
    "DISK_ERRNOS",
    "Written",
    "atomic_path",
    "atomic_folder",
    "disk_errors",
    "disk_error",
    "free_space",
    "write_file",
    "write_text",
    "sha256_of",
    "flush_tree",
    "sweep",
]

#: the errors that say the folder cannot take the file (not a fault of the file or of tuner)
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
_CHUNK = 1 << 20
_SUFFIX = ".tmp"


@dataclass(frozen=True)
class Written:
    """A file written whole: where, its SHA-256 (hex) and its size in bytes."""

    path: Path
    sha256: str
    size: int


def free_space(folder: str | Path) -> str:
    """``1.2 GB free of 100.0 GB`` for the file system holding ``folder`` (its nearest existing parent)."""
    place = Path(folder).absolute()
    while not place.exists() and place != place.parent:
        place = place.parent
    try:
        usage = shutil.disk_usage(place)
    except OSError:
        return "free space unknown"
    return f"{_size(usage.free)} free of {_size(usage.total)}"


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def disk_error(error: OSError, folder: str | Path, what: str, advice: str) -> ArtifactWriteError:
    """The one-line error for ``error`` (one of :data:`DISK_ERRNOS`) met while writing ``what`` into ``folder``."""
    reason = _REASONS.get(error.errno or 0) or error.strerror or str(error)
    return ArtifactWriteError(f"cannot write {what} to {folder}: {reason} ({free_space(folder)}). {advice}")


@contextlib.contextmanager
def disk_errors(folder: str | Path, what: str, advice: str) -> Iterator[None]:
    """Turn a disk error (:data:`DISK_ERRNOS`) raised inside the block into :func:`disk_error`'s one line."""
    try:
        yield
    except OSError as error:
        if error.errno in DISK_ERRNOS:
            raise disk_error(error, folder, what, advice) from None
        raise


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}{_SUFFIX}")


def _fsync_folder(folder: Path) -> None:
    """Flush ``folder``'s entries (a rename in it) to the disk; a file system that cannot is left as it is."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _fsync_file(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, what: str, advice: str) -> Iterator[Path]:
    """A temporary path beside ``path`` for the block to write (with anything: ``torch.save``, a Lightning
    checkpoint, ...); when the block ends, that file is flushed and renamed to ``path``. If the block or the
    flush fails, nothing is left and ``path`` is as it was; a disk error becomes :func:`disk_error`'s line."""
    path = Path(path)
    temporary = _temporary(path)
    try:
        with disk_errors(path.parent, what, advice):
            yield temporary
            _fsync_file(temporary)
            os.replace(temporary, path)
            _fsync_folder(path.parent)
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)  # gone after a success; a failure's partial file


@contextlib.contextmanager
def atomic_folder(folder: str | Path, *, what: str, advice: str) -> Iterator[Path]:
    """A temporary folder beside ``folder`` for the block to fill; when the block ends, its files are flushed
    and renamed into ``folder`` (created if needed; files of ``folder`` the block did not write stay). If the
    block fails, nothing of it is left in ``folder``; a disk error becomes :func:`disk_error`'s line."""
    folder = Path(folder)
    staging = _temporary(folder)
    try:
        with disk_errors(folder.parent, what, advice):
            folder.parent.mkdir(parents=True, exist_ok=True)
            staging.mkdir()
            yield staging
            flush_tree(staging)
            for root, _, names in os.walk(staging):
                target = folder / Path(root).relative_to(staging)
                target.mkdir(parents=True, exist_ok=True)
                for name in names:
                    os.replace(Path(root) / name, target / name)
                _fsync_folder(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _copy(source: BinaryIO, target: BinaryIO, digest: hashlib._Hash) -> int:
    """Copy ``source`` to ``target`` in chunks, hashing them; the number of bytes written."""
    size = 0
    while chunk := source.read(_CHUNK):
        digest.update(chunk)
        target.write(chunk)
        size += len(chunk)
    return size


def write_file(path: str | Path, content: BinaryIO | str | Path, *, what: str, advice: str) -> Written:
    """Write ``content`` (an open binary file, or the path of one) to ``path`` whole or not at all, hashing it
    on the way (:class:`Written`); see :func:`atomic_path`."""
    path = Path(path)
    with contextlib.ExitStack() as stack:
        source = content if not isinstance(content, (str, Path)) else stack.enter_context(Path(content).open("rb"))
        with atomic_path(path, what=what, advice=advice) as temporary:
            digest = hashlib.sha256()
            with temporary.open("xb") as target:
                size = _copy(source, target, digest)
                target.flush()
    return Written(path, digest.hexdigest(), size)


def write_text(path: str | Path, text: str, *, what: str, advice: str) -> Written:
    """Write ``text`` (UTF-8) to ``path`` whole or not at all."""
    return write_file(path, io.BytesIO(text.encode("utf-8")), what=what, advice=advice)


def sha256_of(path: str | Path) -> str:
    """The SHA-256 (hex) of the file ``path``."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as source:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def flush_tree(folder: str | Path) -> None:
    """Flush every file and folder under ``folder`` to the disk (before renaming the files into place)."""
    folder = Path(folder)
    for root, _, names in os.walk(folder):
        for name in names:
            _fsync_file(Path(root) / name)
        _fsync_folder(Path(root))


#: a temporary file this old whose process is gone is a killed writer's (not one of another PID namespace that
#: shares the host name, e.g. containers on the host's network, whose writes take seconds)
SWEEP_AGE = 3600.0


def sweep(folder: str | Path, min_age: float = SWEEP_AGE) -> list[Path]:
    """Remove the temporary files in ``folder`` that processes of this machine left when they were killed
    mid-write (their process is gone and the file has not changed for ``min_age`` seconds); those of live
    processes and of other machines stay. Returns what went."""
    host = socket.gethostname()
    removed = []
    now = time.time()
    with contextlib.suppress(OSError):
        for entry in Path(folder).iterdir():
            parts = entry.name.rsplit(".", 3)  # [".NAME.HOST", PID, RANDOM, "tmp"]
            if len(parts) != 4 or parts[3] != _SUFFIX[1:] or not parts[0].startswith("."):
                continue
            if not parts[0].endswith(f".{host}") or not parts[1].isdigit() or _alive(int(parts[1])):
                continue
            try:
                if now - entry.lstat().st_mtime < min_age:
                    continue
            except OSError:  # gone already
                continue
            with contextlib.suppress(OSError):
                if entry.is_dir() and not entry.is_symlink():  # a folder export's staging folder
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
                removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True
