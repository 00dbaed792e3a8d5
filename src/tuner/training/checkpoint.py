"""The callback that keeps a trial's checkpoints in the study's artifact store: its latest epoch's, to resume
from, and its best epoch's (the one its value comes from), which is the one a finished trial keeps."""

from __future__ import annotations

import contextlib
import logging
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
from typing_extensions import override

from tuner.store import files, records
from tuner.store.artifacts import ArtifactFolder, download, list_artifact
from tuner.text import epoch_number

if TYPE_CHECKING:
    import optuna

__all__ = ["EpochCheckpoint", "checkpoint_problem"]

logger = logging.getLogger(__name__)


class EpochCheckpoint(pl.Callback):
    """After every finished epoch, save a Lightning checkpoint of the trial (model, optimizer,
    scheduler, loop and callback states) to the study's artifact store, then drop the one before it unless it
    is the trial's best epoch so far: at most two files per running trial, the latest and the best.

    The trial's system attribute :data:`tuner.store.records.CHECKPOINT` names the latest one, with its SHA-256
    and size, and under ``best`` the best epoch's, so a retry of the trial (it inherits the attribute) resumes
    after the latest epoch (see :meth:`resume_path`) and still knows its best. A finished trial keeps the best
    epoch's checkpoint alone (:meth:`keep`): the one its value comes from, which ``tuner evaluate``, ``study:``
    pipelines and the dashboard's download use. Each checkpoint is written to the artifact folder whole or not at
    all (a temporary name, flushed, renamed: :class:`~tuner.store.artifacts.ArtifactFolder`); a full or read-only
    folder raises
    :class:`~tuner.errors.ArtifactWriteError` and the checkpoint before it stays. An epoch after which the trial
    is pruned is not saved (a pruned trial is never resumed). At the end of a trial the runner calls :meth:`keep`
    (the checkpoint stays, listed in optuna-dashboard as the trial's artifact) or :meth:`discard`, and always
    :meth:`close`.
    """

    def __init__(self, trial: optuna.Trial, store: ArtifactFolder) -> None:
        self.trial = trial
        self.store = store
        self._tmp = Path(tempfile.mkdtemp(prefix="tuner-ckpt-"))
        self.record: dict[str, Any] | None = records.checkpoint_of(trial.study, trial)
        #: the best epoch's checkpoint so far (a record like :attr:`record`; None: not known, e.g. an older record)
        self.best: dict[str, Any] | None = (self.record or {}).get("best")
        #: the inherited checkpoint :meth:`resume_path` found unusable: ``{artifact_id, epoch, problem}``
        self.discarded: dict[str, Any] | None = None

    def resume_path(self) -> Path | None:
        """The checkpoint this trial resumes from (one inherited from the trial it retries), fetched to a
        local file and checked; None to start from scratch: no checkpoint, or one that is not in this worker's
        artifact folder, is truncated, changed (its SHA-256 is not the one recorded when it was written) or
        cannot be loaded. Such a checkpoint is named in a warning, removed, and kept in :attr:`discarded`."""
        if not self.record:
            return None
        local = self._tmp / "resume.ckpt"
        name = self.store.folder / self.record["artifact_id"]
        if not download(self.store, self.record["artifact_id"], local):
            self._discard_inherited(
                f"is not in this worker's artifact folder (written on {self.record.get('host')}; workers on several "
                "machines need an artifact folder they all mount: --artifacts DIR)",
                name,
            )
            return None
        problem = checkpoint_problem(local, self.record)
        if problem is not None:
            local.unlink()
            self._remove(self.record["artifact_id"])
            self._discard_inherited(problem, name)
            return None
        return local

    def _discard_inherited(self, problem: str, name: Path) -> None:
        assert self.record is not None
        logger.warning(
            "trial %d: checkpoint %s (after epoch %d) %s; the trial restarts from epoch 1",
            self.trial.number,
            name,
            self.record["epoch"] + 1,
            problem,
        )
        self.discarded = {"artifact_id": self.record["artifact_id"], "epoch": self.record["epoch"], "problem": problem}
        if self.best is not None and self.best["artifact_id"] != self.record["artifact_id"]:
            self._remove(self.best["artifact_id"])  # restarting from epoch 1: an earlier best no longer applies
        records.write_checkpoint(self.trial.study, self.trial, None)  # a retry of this retry does not try it again
        self.record = self.best = None

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import optuna

        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch
        if trainer.should_stop and epoch + 1 < (trainer.max_epochs or 0):
            return  # pruned after this epoch
        local = self._tmp / f"epoch={epoch:03d}.ckpt"
        what = f"the checkpoint of trial {self.trial.number} after epoch {epoch + 1}"
        try:
            with files.disk_errors(self._tmp.parent, what, "Free space there, or set TMPDIR to a folder with room"):
                trainer.save_checkpoint(local)
            artifact_id = f"trial{self.trial.number}-epoch{epoch + 1:03d}-{uuid.uuid4().hex[:12]}.ckpt"  # from 1
            written = self.store.put(artifact_id, local, what)
        finally:
            local.unlink(missing_ok=True)
        previous, best_before = self.record, self.best
        record = {
            "artifact_id": artifact_id,
            "epoch": epoch,
            "host": socket.gethostname(),
            "at": time.time(),
            "sha256": written.sha256,
            "bytes": written.size,
        }
        best = record if _best_epoch(trainer) == epoch else best_before
        try:
            records.write_checkpoint(self.trial.study, self.trial, {**record, "best": best})
        except optuna.exceptions.UpdateFinishedTrialError:  # another worker took the trial over: not recorded
            self._remove(artifact_id)
            raise
        self.record, self.best = record, best
        kept = {record["artifact_id"], *([best["artifact_id"]] if best else [])}
        for old in (previous, best_before):
            if old is not None and old["artifact_id"] not in kept:
                self._remove(old["artifact_id"])

    def keep(self) -> None:
        """Keep the best epoch's checkpoint (the latest's where the best is not known), recorded as the trial's
        checkpoint and listed as its artifact in optuna-dashboard; the latest epoch's, if another, is removed."""
        kept = self.best or self.record
        if kept is None:
            return
        if self.record is not None and self.record["artifact_id"] != kept["artifact_id"]:
            self._remove(self.record["artifact_id"])
        self.record, self.best = dict(kept), None
        records.write_checkpoint(self.trial.study, self.trial, self.record)
        filename = f"trial{self.trial.number}-epoch{epoch_number(kept['epoch'])}.ckpt"
        list_artifact(self.trial.study, self.trial, kept["artifact_id"], filename)

    def discard(self) -> None:
        """Remove the trial's checkpoints from the artifact store (the trial will not be resumed)."""
        if self.record is not None or self.best is not None:
            for old in {r["artifact_id"] for r in (self.record, self.best) if r is not None}:
                self._remove(old)
            records.write_checkpoint(self.trial.study, self.trial, None)
            self.record = self.best = None

    def _remove(self, artifact_id: str) -> None:
        import optuna

        with contextlib.suppress(optuna.artifacts.exceptions.ArtifactNotFound):
            self.store.remove(artifact_id)

    def close(self) -> None:
        """Remove this worker's local scratch folder (the artifact store keeps what keep() kept)."""
        import shutil

        shutil.rmtree(self._tmp, ignore_errors=True)


def _best_epoch(trainer: pl.Trainer) -> int | None:
    """The trial's best epoch so far, as its reporter (which runs before this callback) has it."""
    from tuner.training.reporting import TrialReporter

    reporter = next((c for c in trainer.callbacks if isinstance(c, TrialReporter)), None)  # type: ignore[attr-defined]
    return reporter.best_epoch if reporter is not None else None


def checkpoint_problem(path: Path, record: dict[str, Any]) -> str | None:
    """What is wrong with the checkpoint file ``path`` that the record ``record`` describes (None: nothing): a
    size or SHA-256 other than those recorded when it was written (a record from before tuner kept them has
    neither), or a file torch cannot load."""
    import torch

    size, expected = path.stat().st_size, record.get("bytes")
    if isinstance(expected, int) and size != expected:
        if size < expected:
            return f"is truncated ({size:,} of the {expected:,} bytes written)"
        return f"has {size:,} bytes, not the {expected:,} written"
    digest = record.get("sha256")
    if digest and files.sha256_of(path) != digest:
        return "was changed after it was written (its SHA-256 is not the one recorded)"
    try:
        torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as error:  # any way a file fails to load (zip, pickle, ...): the checkpoint is unusable
        text = str(error).strip().splitlines()
        return f"cannot be loaded ({type(error).__name__}: {text[0] if text else ''})"
    return None
