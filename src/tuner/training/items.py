"""Per-item results of one validation: what ``tuner evaluate``'s paired bootstrap resamples.

A validation reports one figure (DER over a split's files, EER over its trials, mean SI-SNRi over its mixtures).
Whether two models differ on the test split is a question about the items behind that figure, scored by both:
:class:`ItemScores` holds them, and :class:`ItemCollector` (a callback that :func:`tuner.training.fit.validate`
attaches) gathers them. By default it takes the ``item_scores`` a module sets at the end of its validation
epoch; an objective whose module is a library's (pyannote's segmentation model) returns its own collector from
:meth:`tuner.objectives.base.TrainedObjective.item_collector`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import numpy as np
from typing_extensions import override

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = ["ItemScores", "ItemCollector"]


@dataclass(frozen=True)
class ItemScores:
    """One model's results on each item of a split, in a fixed item order (two models on one split agree).

    ``values``: the item's metric (a file's DER, a mixture's SI-SNRi, a sample's squared error), or the item's score
    where the metric is not a mean over items (a verification trial's cosine score: ``labels`` then hold the trials'
    target/non-target labels and the metric is their EER). ``weights``: how much an item weighs in the mean (a file's
    reference speech, as DER weighs files), None for equal weights. ``weighted_by`` names the weight.
    """

    ids: tuple[str, ...]
    values: npt.NDArray[np.float64]
    weights: npt.NDArray[np.float64] | None = None
    labels: npt.NDArray[np.int64] | None = None
    weighted_by: str | None = None

    def __post_init__(self) -> None:
        for name in ("weights", "labels"):
            other = getattr(self, name)
            if other is not None and len(other) != len(self.values):
                raise ValueError(f"ItemScores: {len(other)} {name} for {len(self.values)} items")
        if len(self.ids) != len(self.values):
            raise ValueError(f"ItemScores: {len(self.ids)} ids for {len(self.values)} items")

    @property
    def statistic(self) -> Callable[[Any, Any], float] | None:
        """The metric of a subset of items for :func:`tuner.statistics.paired_bootstrap` (None: the weighted
        mean of ``values``): the EER of the chosen trials when there are labels, in percent as the verification
        objective's metric (a difference in fractions beside figures in percent said nothing)."""
        if self.labels is None:
            return None
        from tuner.metrics.verification import compute_eer

        labels = self.labels

        def eer(values: Any, items: Any) -> float:
            chosen = labels[items]
            if chosen.min() == chosen.max():  # a resample of one kind of trial has no EER
                return float("nan")
            return 100.0 * compute_eer(values[items], chosen)[0]

        return eer


class ItemCollector(pl.Callback):
    """Gathers a validation's :class:`ItemScores` (:attr:`scores`, None until a validation ended).

    This base takes the module's ``item_scores`` attribute once the validation ended (a module's
    ``on_validation_epoch_end`` runs after its callbacks'); subclasses compute them from the batches instead.
    """

    def __init__(self) -> None:
        self.scores: ItemScores | None = None

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        scores = getattr(pl_module, "item_scores", None)
        if isinstance(scores, ItemScores):
            self.scores = scores
