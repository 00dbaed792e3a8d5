"""Trial checkpoints as artifacts of the study: where the folder is, opening it (:class:`ArtifactFolder`: every
file written whole or not at all, with its SHA-256), listing a checkpoint under its trial (what optuna-dashboard
offers for download), and the one way to fetch one back to a local file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from tuner.errors import StorageError
from tuner.store import files
from tuner.store.connect import sqlite_path
from tuner.store.optuna_internals import list_artifact

if TYPE_CHECKING:
    from tuner.store.optuna_internals import ArtifactStore

__all__ = ["resolve_artifact_dir", "open_artifact_store", "ArtifactFolder", "download", "list_artifact"]

#: what to do when the artifact folder cannot take a checkpoint (after :func:`tuner.store.files.disk_error`'s
#: folder, reason and free space)
FOLDER_ADVICE = (
    "Free space there, or point --artifacts (or $TUNER_ARTIFACTS) at a writable folder with room; then run the "
    "same command again: the interrupted trial resumes from its last checkpoint"
)


def resolve_artifact_dir(url: str, artifacts: str | Path | None = None) -> Path:
    """Where trial checkpoints go: ``artifacts``, else ``$TUNER_ARTIFACTS``, else beside a SQLite store
    (``<its folder>/artifacts``), else ``storage/artifacts`` in the working directory.

    Workers on several machines sharing a PostgreSQL study need a folder they all mount (NFS, ...):
    a trial retried on another machine resumes from the checkpoint its first worker wrote there.
    """
    chosen = artifacts or os.environ.get("TUNER_ARTIFACTS")
    if chosen:
        return Path(chosen).expanduser()
    sqlite_file = sqlite_path(url)
    return (sqlite_file.parent if sqlite_file is not None else Path("storage")) / "artifacts"


def open_artifact_store(folder: str | Path) -> ArtifactFolder:
    """The artifact store on ``folder`` (created if needed; temporary files that this machine's killed processes
    left there are removed)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StorageError(
            f"cannot create the checkpoint folder {folder}: {error.strerror or error}. "
            "Pass a writable folder with --artifacts DIR (or $TUNER_ARTIFACTS)."
        ) from None
    files.sweep(folder)
    return ArtifactFolder(folder)


class ArtifactFolder:
    """A folder of artifacts as an Optuna artifact store (``open_reader``, ``write``, ``remove``: what
    ``optuna.artifacts`` and optuna-dashboard call), read as Optuna's ``FileSystemArtifactStore`` reads it, but
    written whole or not at all (:mod:`tuner.store.files`): Optuna's store writes a file in place, so a full
    disk left part of a checkpoint under its final name. :meth:`put` also gives the file's SHA-256 and size."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path(self, artifact_id: str) -> Path:
        """The file that holds ``artifact_id`` (an id that would leave the folder is refused, as Optuna does)."""
        path = self.folder / artifact_id
        inside = os.path.commonpath([os.path.abspath(self.folder), os.path.abspath(path)])
        if os.path.isabs(artifact_id) or inside != os.path.abspath(self.folder):
            raise ValueError(f"Invalid artifact_id: {artifact_id}")
        return path

    def open_reader(self, artifact_id: str) -> BinaryIO:
        import optuna

        try:
            return self.path(artifact_id).open("rb")
        except FileNotFoundError as error:
            raise optuna.artifacts.exceptions.ArtifactNotFound("not found") from error

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self.put(artifact_id, content_body)

    def put(self, artifact_id: str, content: BinaryIO | Path, what: str | None = None) -> files.Written:
        """Write ``content`` (an open binary file or a path) as ``artifact_id``, whole or not at all; a full or
        read-only folder raises :class:`~tuner.errors.ArtifactWriteError` (folder, free space, what to do)."""
        return files.write_file(
            self.path(artifact_id), content, what=what or f"artifact {artifact_id}", advice=FOLDER_ADVICE
        )

    def remove(self, artifact_id: str) -> None:
        import optuna

        try:
            self.path(artifact_id).unlink()
        except FileNotFoundError as error:
            raise optuna.artifacts.exceptions.ArtifactNotFound("not found") from error


def download(store: ArtifactStore | str | Path, artifact_id: str, path: str | Path) -> bool:
    """Copy the artifact ``artifact_id`` of ``store`` (an artifact store, or its folder) to the file ``path``;
    False, and nothing written, when the store does not hold it (another machine's folder, a removed file)."""
    import optuna

    if isinstance(store, (str, Path)):
        store = open_artifact_store(store)
    try:
        optuna.artifacts.download_artifact(artifact_store=store, file_path=str(path), artifact_id=artifact_id)
    except optuna.artifacts.exceptions.ArtifactNotFound:
        return False
    return True
