"""Models and losses: small trainable heads and losses on top of pretrained speech models, and the
upstream wrappers (``tuner.models.wavlm``, imported on demand: it needs s3prl)."""

from __future__ import annotations

from tuner.models.ecapa import ECAPATDNN
from tuner.models.losses import (
    LOSSES,
    AAMSoftmax,
    BatchHardTriplet,
    PairBCE,
    build_speaker_loss,
)

__all__ = ["ECAPATDNN", "AAMSoftmax", "PairBCE", "BatchHardTriplet", "LOSSES", "build_speaker_loss"]
