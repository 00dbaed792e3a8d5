"""Speaker-embedding training losses: AAM-softmax (ArcFace), pair BCE on cosine scores, batch-hard triplet.

Each is an ``nn.Module`` called as ``loss(embeddings, labels)`` with embeddings (batch, emb_dim) and
integer speaker labels (batch,), returning a scalar.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LOSSES", "AAMSoftmax", "PairBCE", "BatchHardTriplet", "build_speaker_loss"]

#: Names accepted by :func:`build_speaker_loss`.
LOSSES = ("aam", "pair_bce", "triplet")


def _check_batch(embeddings: torch.Tensor, labels: torch.Tensor) -> None:
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be (batch, emb_dim), got shape {tuple(embeddings.shape)}")
    if labels.ndim != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(f"labels must be (batch,) = ({embeddings.shape[0]},), got shape {tuple(labels.shape)}")


def _cosine_matrix(embeddings: torch.Tensor) -> torch.Tensor:
    normalised = F.normalize(embeddings, dim=1)
    return normalised @ normalised.T


class AAMSoftmax(nn.Module):
    """Additive angular margin softmax (ArcFace): cross-entropy on ``scale * cos(theta + margin)``.

    The margin is added to the angle of the true class only. Where ``theta + margin`` would pass pi
    (cos(theta) <= cos(pi - margin)), the target logit falls back to ``cos(theta) - margin * sin(margin)``
    so that it keeps decreasing with theta (the usual non-"easy-margin" formulation).
    """

    def __init__(self, emb_dim: int, n_classes: int, margin: float = 0.2, scale: float = 30.0) -> None:
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"AAM-softmax needs at least 2 classes, got {n_classes}")
        if margin < 0.0 or scale <= 0.0:
            raise ValueError(f"margin must be >= 0 and scale > 0, got {margin} and {scale}")
        self.margin = float(margin)
        self.scale = float(scale)
        self.weight = nn.Parameter(torch.empty(n_classes, emb_dim))
        nn.init.xavier_uniform_(self.weight)
        self._cos_m = math.cos(margin)
        self._sin_m = math.sin(margin)
        self._threshold = math.cos(math.pi - margin)
        self._fallback = math.sin(math.pi - margin) * margin

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(batch, n_classes) cosine between each embedding and each class centre."""
        return F.normalize(embeddings, dim=1) @ F.normalize(self.weight, dim=1).T

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        _check_batch(embeddings, labels)
        cosine = self.cosine(embeddings).clamp(-1.0, 1.0)
        sine = (1.0 - cosine.pow(2)).clamp(min=1e-9).sqrt()
        shifted = cosine * self._cos_m - sine * self._sin_m
        shifted = torch.where(cosine > self._threshold, shifted, cosine - self._fallback)
        target = F.one_hot(labels, cosine.shape[1]).bool()
        logits = self.scale * torch.where(target, shifted, cosine)
        return F.cross_entropy(logits, labels)


class PairBCE(nn.Module):
    """Binary cross-entropy over every pair (i < j) of the batch, target 1 when same speaker.

    The pair's logit is ``w * cos + b`` with learnable ``w`` (init 10) and ``b`` (init -5); positive
    and negative pairs weigh half of the loss each (all of it when the batch has no negative pair).
    """

    def __init__(self, init_weight: float = 10.0, init_bias: float = -5.0) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(float(init_weight)))
        self.b = nn.Parameter(torch.tensor(float(init_bias)))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        _check_batch(embeddings, labels)
        first, second = torch.triu_indices(len(labels), len(labels), offset=1, device=embeddings.device)
        cosine = _cosine_matrix(embeddings)[first, second]
        same = labels[first] == labels[second]
        n_positive = int(same.sum())
        if n_positive == 0:
            raise ValueError("pair BCE needs a batch with at least two utterances of one speaker")
        n_negative = len(same) - n_positive
        logits = self.w * cosine + self.b
        losses = F.binary_cross_entropy_with_logits(logits, same.to(cosine.dtype), reduction="none")
        positive_loss = losses[same].mean()
        if n_negative == 0:
            return positive_loss
        return 0.5 * positive_loss + 0.5 * losses[~same].mean()


class BatchHardTriplet(nn.Module):
    """Triplet loss on cosine distance (1 - cos) with batch-hard mining.

    For each anchor: ``relu(d(hardest positive) - d(hardest negative) + margin)``, averaged over the
    anchors that have both a positive (another utterance of their speaker) and a negative in the batch.
    """

    def __init__(self, margin: float = 0.2) -> None:
        super().__init__()
        if margin < 0.0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.margin = float(margin)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        _check_batch(embeddings, labels)
        distance = 1.0 - _cosine_matrix(embeddings)
        same = labels[:, None] == labels[None, :]
        itself = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        positive = same & ~itself
        negative = ~same
        valid = positive.any(dim=1) & negative.any(dim=1)
        if not bool(valid.any()):
            raise ValueError("triplet loss needs an anchor with a positive (same speaker) and a negative in the batch")
        hardest_positive = distance.masked_fill(~positive, float("-inf")).amax(dim=1)
        hardest_negative = distance.masked_fill(~negative, float("inf")).amin(dim=1)
        losses = torch.relu(hardest_positive - hardest_negative + self.margin)
        return losses[valid].mean()


def build_speaker_loss(name: str, emb_dim: int, n_speakers: int, margin: float, scale: float) -> nn.Module:
    """The loss ``name`` (one of :data:`LOSSES`); ``margin`` serves AAM and triplet, ``scale`` AAM only."""
    if name == "aam":
        return AAMSoftmax(emb_dim, n_speakers, margin=margin, scale=scale)
    if name == "pair_bce":
        return PairBCE()
    if name == "triplet":
        return BatchHardTriplet(margin=margin)
    raise ValueError(f"unknown speaker loss {name!r}: choose one of {', '.join(LOSSES)}")
