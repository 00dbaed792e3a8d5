"""Every use of pyannote.audio's private API, in one place (each tested in tests/test_pyannote_internals.py).

* ``pyannote.audio.torchmetrics.functional.audio.diarization_error_rate._der_update``: the DER components of each
  validation chunk (pyannote's metric classes only sum them over a whole validation).
* ``Task.prepared_data["validation"]``: which file each validation chunk was cut from, in the validation
  dataloader's order (pyannote's validation batches are not shuffled).
* ``pyannote.audio.utils.permutation.permutate``'s implementation for tensors, registered again (it is a
  ``functools.singledispatch``) so that it matches speakers in float32: under bf16-mixed autocast the scores
  are bfloat16, and SciPy's ``linear_sum_assignment`` refuses a bfloat16 cost matrix.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from typing_extensions import override

from tuner.training.items import ItemCollector, ItemScores

__all__ = ["chunk_der_components", "validation_chunk_files", "FileDERCollector", "match_speakers_in_float32"]

#: pyannote's validation metric binarizes at this threshold (``DiarizationErrorRate(0.5)``)
THRESHOLD = 0.5


def match_speakers_in_float32() -> None:
    """Make pyannote's speaker matching (``permutate`` on tensors: training, validation and its DER metric)
    compute in float32 when it is given half-precision scores; full-precision calls are unchanged. Once per
    process."""
    from pyannote.audio.utils import permutation

    original = permutation.permutate.dispatch(torch.Tensor)
    if getattr(original, "tuner_float32", False):
        return

    def permutate_float32(y1: torch.Tensor, y2: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        half = (torch.bfloat16, torch.float16)
        return original(y1.float() if y1.dtype in half else y1, y2.float() if y2.dtype in half else y2, *args, **kwargs)

    permutate_float32.tuner_float32 = True  # type: ignore[attr-defined]
    permutation.permutate.register(torch.Tensor)(permutate_float32)


def chunk_der_components(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(false alarm, missed detection, confusion, reference speech) of each chunk of a validation ``batch``,
    shape (chunks, 4), as pyannote's speaker-diarization task scores it (powerset output turned multi-label)."""
    from pyannote.audio.torchmetrics.functional.audio.diarization_error_rate import _der_update

    with torch.no_grad():
        prediction = model(batch["X"])
        specifications = model.specifications
        powerset = getattr(specifications, "powerset", False)
        multilabel = model.powerset.to_multilabel(prediction) if powerset else prediction
        false_alarm, missed, confusion, total = _der_update(
            torch.transpose(multilabel, 1, 2), torch.transpose(batch["y"], 1, 2), threshold=THRESHOLD, reduce="chunk"
        )
    return torch.stack([false_alarm, missed, confusion, total], dim=1).double().cpu()


def validation_chunk_files(task: Any) -> tuple[np.ndarray, list[str]]:
    """For each validation chunk, in the dataloader's order, the index of its file; and each file's name (its
    audio file's stem)."""
    chunks = task.prepared_data["validation"]
    names = [Path(str(path)).stem for path in task.prepared_data["audio-path"]]
    return np.asarray(chunks["file_id"], dtype=np.int64), names


class FileDERCollector(ItemCollector):
    """The DER of each validation file (chunks' components summed by file), weighted by its reference speech."""

    def __init__(self) -> None:
        super().__init__()
        self._sums: dict[int, torch.Tensor] = defaultdict(lambda: torch.zeros(4, dtype=torch.float64))
        self._seen = 0

    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._sums.clear()
        self._seen = 0

    @override
    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        if trainer.sanity_checking:
            return
        components = chunk_der_components(pl_module, batch)
        files, _ = validation_chunk_files(pl_module.task)
        for offset, row in enumerate(components):
            self._sums[int(files[self._seen + offset])] += row
        self._seen += len(components)

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not self._sums:
            return
        _, uris = validation_chunk_files(pl_module.task)
        # a file without reference speech has no DER of its own (its false alarms weigh nothing in a mean)
        kept = sorted(f for f, sums in self._sums.items() if sums[3] > 0)
        sums = torch.stack([self._sums[f] for f in kept]).numpy()
        self.scores = ItemScores(
            ids=tuple(uris[f] for f in kept),
            values=sums[:, :3].sum(axis=1) / sums[:, 3],
            weights=sums[:, 3],
            weighted_by="reference speech (frames)",
        )
