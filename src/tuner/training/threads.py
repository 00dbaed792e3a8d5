"""How many CPU threads a worker's torch uses: the cores divided among the tuner workers on this machine.

torch takes every core by default. Two workers on one machine, or one beside another job, then fight over the
cores: on 2 shared cores an epoch of segmentation-3.0 took 107-220 s instead of 12 s, and one PyanNet step
28.6 s with 2 threads but 10.6 s with 1 (``benchmarks/threads.py`` measures it). Each worker announces itself
with a file under ``<workdir>/cache/workers`` (removed when it ends; a dead worker's file is ignored), and takes
its share of the cores, at least one; ``--threads`` (or a study's ``threads``) overrides the share.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import socket
from pathlib import Path

from tuner.errors import ConfigError

__all__ = ["available_cores", "share_cores", "check_threads"]

logger = logging.getLogger(__name__)


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and ``taskset`` narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_threads(value: object, where: str) -> int | None:
    """``value`` as a thread count (None: the share of the cores), or a ConfigError naming ``where``."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(
            f"{where}: 'threads' must be a positive integer (or left out for a share of the cores), got {value!r}."
        )
    return value


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _workers(folder: Path) -> int:
    """Live tuner workers announced in ``folder`` on this host (stale files of dead ones removed)."""
    host = socket.gethostname()
    count = 0
    for path in folder.glob(f"{host}-*.worker"):
        try:
            pid = int(path.stem.rsplit("-", 1)[1])
        except ValueError:
            continue
        if _alive(pid):
            count += 1
        else:
            with contextlib.suppress(OSError):
                path.unlink()
    return count


_said: dict[str, int] = {}


def share_cores(workdir: str | Path, requested: int | None = None) -> int:
    """Announce this worker under ``workdir`` and set torch's thread count to ``requested`` or, by default,
    this machine's cores divided among its live tuner workers (this one included; at least 1). Returns the
    count. The announcement is removed when the process ends; calling again (before each trial) takes the
    share anew, as workers come and go."""
    import torch

    folder = Path(workdir) / "cache" / "workers"
    mine = folder / f"{socket.gethostname()}-{os.getpid()}.worker"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not mine.exists():
            mine.touch()
            atexit.register(lambda: mine.unlink(missing_ok=True))
        workers = max(1, _workers(folder))
    except OSError:  # a read-only workdir: this worker alone, as far as it can tell
        workers = 1
    cores = available_cores()
    threads = requested or max(1, cores // workers)
    if threads == torch.get_num_threads() and _said.get("threads") == threads:
        return threads  # checked again before each trial: said once, and again only when it changes
    torch.set_num_threads(threads)
    _said["threads"] = threads
    logger.info(
        "%d torch thread%s (%d cores, %d tuner worker%s on this machine%s)", threads, "s" if threads > 1 else "",
        cores, workers, "s" if workers > 1 else "", "; set by --threads" if requested else "",
    )  # fmt: skip
    return threads
