"""The speaker embedder a ``wavlm_sv`` study trains (WavLM -> weighted layer sum -> ECAPA-TDNN), as a
pyannote.audio ``Model``, so that pyannote's speaker-diarization pipeline embeds speakers with it.

:func:`load_wavlm_sv_embedding` reads a checkpoint of :class:`tuner.objectives.wavlm_sv.SpeakerEmbedder` (the
``final.ckpt`` of ``tuner train``, or a trial's kept checkpoint): its hyper-parameters rebuild the model, its
weights load (the training loss's weights are left out: an embedding needs none). ``forward(waveforms,
weights)`` pools each waveform's frames where ``weights`` (pyannote's speaker activity in the chunk) is on.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pyannote.audio import Model
from pyannote.audio.core.task import Problem, Resolution, Specifications, Task

from tuner import quiet

__all__ = ["WavLMEmbedding", "load_wavlm_sv_embedding", "read_wavlm_sv_checkpoint"]

#: the sub-modules of SpeakerEmbedder an embedding keeps (its ``loss`` is training-only)
KEPT = ("upstream.", "featurizer.", "head.")


class WavLMEmbedding(Model):
    """WavLM + weighted layer sum + ECAPA-TDNN: (batch, 1, samples) at 16 kHz -> (batch, emb_dim)."""

    def __init__(
        self,
        wavlm: Mapping[str, Any],
        head: Mapping[str, Any],
        sample_rate: int = 16000,
        num_channels: int = 1,
        task: Task | None = None,
    ) -> None:

        from tuner.models.ecapa import ECAPATDNN
        from tuner.models.wavlm import WavLMUpstream, WeightedLayerSum

        super().__init__(sample_rate=sample_rate, num_channels=num_channels, task=task)
        self.save_hyperparameters("wavlm", "head")
        with quiet.ignoring(quiet.WEIGHT_NORM_DEPRECATED, FutureWarning):
            self.upstream = WavLMUpstream(dict(wavlm))
        self.featurizer = WeightedLayerSum(self.upstream.num_layers + 1)
        self.head = ECAPATDNN(self.upstream.hidden_size, **dict(head))
        if task is None:
            self.specifications = Specifications(
                problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK, duration=10.0
            )

    @property
    def dimension(self) -> int:
        return int(dict(self.hparams["head"]).get("emb_dim", 256))

    # pyannote's Model.forward(waveforms, **kwargs) is narrowed here as in pyannote's own embedding models
    def forward(self, waveforms: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        """Embeddings of ``waveforms`` (batch, channels, samples); ``weights`` (batch, frames) at any frame
        rate: only the frames where it is at least 0.5 are pooled (all of them where fewer than 3 are)."""
        hidden, frames = self.upstream(waveforms.mean(dim=1))
        features = self.featurizer(hidden)  # (batch, frames, dim)
        if weights is None:
            return self.head(features, frames)
        active = F.interpolate(weights[:, None].float(), size=features.shape[1], mode="nearest")[:, 0] >= 0.5
        active[active.sum(dim=1) < 3] = True  # a speaker barely active in the chunk: the whole chunk
        lengths = active.sum(dim=1)
        # the active frames first, in order, then the rest (masked by the lengths)
        order = torch.argsort((~active).to(torch.int8), dim=1, stable=True)
        packed = torch.gather(features, 1, order[..., None].expand(-1, -1, features.shape[2]))
        return self.head(packed, lengths)


def read_wavlm_sv_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """The Lightning checkpoint at ``path`` if it holds a ``wavlm_sv`` speaker embedder, else None (read once:
    :func:`load_wavlm_sv_embedding` takes what this returns). Like pyannote's own checkpoints it is unpickled
    in full: give it checkpoints tuner wrote."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        checkpoint = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception:  # not a torch file at all
        return None
    hyper = checkpoint.get("hyper_parameters") if isinstance(checkpoint, Mapping) else None
    if isinstance(hyper, Mapping) and {"wavlm", "head", "n_speakers"} <= set(hyper):
        return checkpoint
    return None


def load_wavlm_sv_embedding(checkpoint: str | Path | Mapping[str, Any]) -> WavLMEmbedding:
    """The embedder in a ``wavlm_sv`` checkpoint (``tuner train``'s ``final.ckpt`` or a trial's; a path, or
    what :func:`read_wavlm_sv_checkpoint` read), in eval mode."""
    if not isinstance(checkpoint, Mapping):
        found = read_wavlm_sv_checkpoint(checkpoint)
        if found is None:
            raise ValueError(f"{checkpoint}: not a checkpoint of a wavlm_sv speaker embedder")
        checkpoint = found
    hyper = checkpoint["hyper_parameters"]
    model = WavLMEmbedding(dict(hyper["wavlm"]), dict(hyper["head"]))
    state = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith(KEPT)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{len(missing)} weights missing (e.g. {missing[:2]}), {len(unexpected)} unexpected")
    return model.eval()
