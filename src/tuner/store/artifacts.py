"""Trial checkpoints as artifacts of the study: where the folder is, opening it, listing a checkpoint under its
trial (what optuna-dashboard offers for download), and the one way to fetch one back to a local file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from tuner.errors import StorageError
from tuner.store.connect import sqlite_path
from tuner.store.optuna_internals import list_artifact

if TYPE_CHECKING:
    import optuna

    from tuner.store.optuna_internals import ArtifactStore

__all__ = ["resolve_artifact_dir", "open_artifact_store", "download", "list_artifact"]


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


def open_artifact_store(folder: str | Path) -> optuna.artifacts.FileSystemArtifactStore:
    """Optuna's file-system artifact store on ``folder`` (created if needed)."""
    import optuna

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StorageError(
            f"cannot create the checkpoint folder {folder}: {error.strerror or error}. "
            "Pass a writable folder with --artifacts DIR (or $TUNER_ARTIFACTS)."
        ) from None
    return optuna.artifacts.FileSystemArtifactStore(folder)


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
