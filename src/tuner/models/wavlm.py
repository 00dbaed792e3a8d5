"""s3prl's WavLM as an upstream that returns every hidden state, plus checkpoint loading.

Only ``s3prl.upstream.wavlm.WavLM`` is imported: ``s3prl.hub`` and ``s3prl.nn`` need torchaudio APIs that
torchaudio 2.11 removed, while the WavLM module itself needs nothing but torch.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tuner.errors import ConfigError

__all__ = ["WavLMUpstream", "WeightedLayerSum", "load_wavlm_checkpoint", "BASE_PLUS", "SMALL_WAVLM"]

logger = logging.getLogger(__name__)

#: Where WavLM Base+ differs from ``WavLMConfig()`` defaults (plus layer drop off for stable fine-tuning).
BASE_PLUS: dict[str, Any] = {
    "relative_position_embedding": True,
    "num_buckets": 320,
    "max_distance": 800,
    "gru_rel_pos": True,
    "encoder_layerdrop": 0.0,
}

#: A narrow, shallow WavLM of the same classes for CPU runs from random weights (tests, demo).
SMALL_WAVLM: dict[str, Any] = {
    **BASE_PLUS,
    "encoder_layers": 3,
    "encoder_embed_dim": 96,
    "encoder_ffn_embed_dim": 192,
    "encoder_attention_heads": 4,
    "conv_feature_layers": "[(64,10,5)] + [(64,3,2)] * 4 + [(64,2,2)] * 2",
    "conv_pos": 32,
    "conv_pos_groups": 4,
    "num_buckets": 64,
    "max_distance": 256,
}


class WavLMUpstream(nn.Module):
    """WavLM returning its hidden states: the input of every transformer layer and the last output
    (``encoder_layers + 1`` tensors of shape (batch, frames, dim)), as s3prl's ``hidden_states``.

    Layers below the first one that trains run without autograd, so a mostly frozen model costs about
    as much as inference (the design brief measured 1.7 s frozen vs 5.9 s fully trained per step).
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig

        self.config = dict(config)
        self.cfg = WavLMConfig(self.config)
        self.model = WavLM(self.cfg)
        self.model.encoder.layerdrop = float(self.config.get("encoder_layerdrop", 0.0))
        self._conv_layers: list[tuple[int, int, int]] = eval(self.cfg.conv_feature_layers)  # s3prl's own format

    @property
    def num_layers(self) -> int:
        return len(self.model.encoder.layers)

    @property
    def hidden_size(self) -> int:
        return int(self.cfg.encoder_embed_dim)

    @property
    def layers(self) -> list[nn.Module]:
        return list(self.model.encoder.layers)

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Number of output frames for input lengths in samples (the conv front end's arithmetic)."""
        frames = lengths.clone()
        for _, kernel, stride in self._conv_layers:
            frames = torch.div(frames - kernel, stride, rounding_mode="floor") + 1
        return frames.clamp(min=1)

    def _frontend_trains(self) -> bool:
        model = self.model
        modules = [model.feature_extractor, model.layer_norm, model.encoder.pos_conv, model.encoder.layer_norm]
        if model.post_extract_proj is not None:
            modules.append(model.post_extract_proj)
        return any(p.requires_grad for m in modules for p in m.parameters())

    def forward(
        self, wav: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``wav`` (batch, samples) at 16 kHz -> (hidden states, valid frames per item)."""
        model, encoder = self.model, self.model.encoder
        batch, samples = wav.shape
        if lengths is None:
            lengths = torch.full((batch,), samples, dtype=torch.long, device=wav.device)
        sample_pad = torch.arange(samples, device=wav.device)[None, :] >= lengths[:, None]
        if self.cfg.normalize:  # per utterance, over its valid samples
            valid = (~sample_pad).float()
            count = valid.sum(1, keepdim=True)
            mean = (wav * valid).sum(1, keepdim=True) / count
            var = (((wav - mean) * valid) ** 2).sum(1, keepdim=True) / count
            wav = (wav - mean) / torch.sqrt(var + 1e-5) * valid

        grad = torch.is_grad_enabled()
        trainable = [any(p.requires_grad for p in layer.parameters()) for layer in encoder.layers]
        first_trained = 0 if self._frontend_trains() else (trainable.index(True) if any(trainable) else len(trainable))

        with torch.set_grad_enabled(grad and first_trained == 0 and self._frontend_trains()):
            features = model.feature_extractor(wav).transpose(1, 2)
            features = model.layer_norm(features)
            padding_mask = model.forward_padding_mask(features, sample_pad)
            if model.post_extract_proj is not None:
                features = model.post_extract_proj(features)
            x = model.dropout_input(features)
            x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)
            x = x + encoder.pos_conv(x.transpose(1, 2)).transpose(1, 2)
            if not encoder.layer_norm_first:
                x = encoder.layer_norm(x)
            x = F.dropout(x, p=encoder.dropout, training=encoder.training)
        x = x.transpose(0, 1)  # (frames, batch, dim), as the layers expect

        hidden = [x]
        pos_bias = None
        for index, layer in enumerate(encoder.layers):
            with torch.set_grad_enabled(grad and index >= first_trained):
                x, _, pos_bias = layer(x, self_attn_padding_mask=padding_mask, need_weights=False, pos_bias=pos_bias)
            hidden.append(x)
        frames = (~padding_mask).sum(1)
        return [h.transpose(0, 1) for h in hidden], frames


class WeightedLayerSum(nn.Module):
    """A learnable softmax-weighted sum of hidden states (s3prl's / UniSpeech's featurizer)."""

    def __init__(self, num_states: int) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(num_states))

    def forward(self, hidden: list[torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack(hidden, dim=0)
        weights = F.softmax(self.weights, dim=0).view(-1, *([1] * (stacked.dim() - 1)))
        return (weights * stacked).sum(0)


def load_wavlm_checkpoint(
    path: str | Path, trust_pickle: bool = False
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(config, state_dict)`` of a WavLM checkpoint in the s3prl / UniSpeech format (a ``.pt`` holding
    ``cfg`` and ``model``, e.g. ``wavlm_base_plus.pt``).

    The file is first read with ``torch.load(weights_only=True)``, which cannot run code. Only if that
    fails and ``trust_pickle`` is set is it unpickled in full (do that only for files you trust).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"pretrained WavLM checkpoint not found: {path}. Give a local .pt in the s3prl/UniSpeech format "
            "(e.g. wavlm_base_plus.pt, a dict with 'cfg' and 'model')."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError) as error:
        if not trust_pickle:
            raise ConfigError(
                f"{path} cannot be read safely (torch.load weights_only=True: {str(error).splitlines()[0]}). "
                "If you trust this file, set options={'trust_checkpoint': True} in the study file to unpickle it."
            ) from None
        logger.warning("unpickling %s in full (trust_checkpoint is set)", path)
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(checkpoint, dict) or "cfg" not in checkpoint or "model" not in checkpoint:
        keys = sorted(checkpoint)[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ConfigError(
            f"{path} is not an s3prl/UniSpeech WavLM checkpoint: expected a dict with 'cfg' and 'model', found {keys}."
        )
    config = checkpoint["cfg"]
    if not isinstance(config, dict):  # some exports keep an omegaconf/dataclass config
        config = dict(vars(config)) if hasattr(config, "__dict__") else dict(config)
    return {**config, "encoder_layerdrop": 0.0}, checkpoint["model"]


def save_wavlm_checkpoint(upstream: WavLMUpstream, path: str | Path) -> None:
    """Write ``upstream`` in the s3prl / UniSpeech format (``{'cfg': dict, 'model': state_dict}``)."""
    torch.save({"cfg": dict(upstream.config), "model": upstream.model.state_dict()}, Path(path))
