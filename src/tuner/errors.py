"""Errors raised by tuner.

Every error a user can cause (a bad file, key, path or URL) is a :class:`TunerError`: its message names
the offending file/line/key and says how to fix it. The CLI prints these without a traceback.
"""

from __future__ import annotations

__all__ = ["TunerError", "ConfigError", "DataError", "StorageError", "ArtifactWriteError", "StudyChanged"]


class TunerError(Exception):
    """Base class of user-facing errors: the message says what is wrong and what to do."""


class ConfigError(TunerError, ValueError):
    """A study file or search-space YAML is invalid (names the file and key)."""


class StudyChanged(ConfigError):
    """A study file (or command line) opens a stored study with another problem than the one it was created for:
    the message has one line per difference, stored and new value, and the ways out (see :mod:`tuner.identity`)."""


class DataError(TunerError, ValueError):
    """A corpus file is missing, unreadable or malformed (names the file, and the line where known)."""


class StorageError(TunerError, RuntimeError):
    """The trial store cannot be reached or written (the URL is shown with its password masked)."""


class ArtifactWriteError(StorageError):
    """A file tuner writes (a trial checkpoint, an export) could not be written: the disk is full, over quota,
    read-only or not writable for this user. Names the folder, its free space and what to do; nothing partial
    is left behind (:mod:`tuner.store.files`)."""
