"""SepFormer from SpeechBrain's pieces (``Encoder``, ``Dual_Path_Model`` with ``SBTransformerBlock`` intra
and inter models, ``Decoder``), built from a small config or loaded from a local SpeechBrain model folder.

A SpeechBrain model folder (e.g. a local copy of speechbrain/sepformer-wsj03mix or sepformer-libri2mix)
holds ``hyperparams.yaml`` (HyperPyYAML declaring ``Encoder``, ``MaskNet`` and ``Decoder``) and
``encoder.ckpt``, ``masknet.ckpt``, ``decoder.ckpt`` (state dicts). Nothing is fetched from a hub.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tuner.errors import ConfigError

__all__ = [
    "SepFormer",
    "SMALL_SEPFORMER",
    "RECIPE_SEPFORMER",
    "build_sepformer",
    "load_speechbrain_sepformer",
    "save_speechbrain_sepformer",
]

logger = logging.getLogger(__name__)

#: SpeechBrain's recipe size (sepformer-wsj02mix / libri2mix): 25.7M parameters.
RECIPE_SEPFORMER: dict[str, Any] = {
    "encoder_channels": 256,
    "kernel_size": 16,
    "stride": 8,
    "d_model": 256,
    "nhead": 8,
    "d_ffn": 1024,
    "intra_layers": 8,
    "inter_layers": 8,
    "num_blocks": 2,
    "chunk_size": 250,
}
#: The same classes, narrow and shallow, for CPU runs from random weights (tests, demo).
SMALL_SEPFORMER: dict[str, Any] = {
    "encoder_channels": 64,
    "kernel_size": 16,
    "stride": 8,
    "d_model": 64,
    "nhead": 4,
    "d_ffn": 128,
    "intra_layers": 1,
    "inter_layers": 1,
    "num_blocks": 2,
    "chunk_size": 100,
}
_CHECKPOINTS = {"encoder": "encoder.ckpt", "masknet": "masknet.ckpt", "decoder": "decoder.ckpt"}


class SepFormer(nn.Module):
    """Encoder -> masks from the dual-path masknet -> decoder, one waveform per speaker (the recipe's
    forward pass). ``forward(mix (batch, time)) -> (batch, time, n_sources)``."""

    #: SpeechBrain's ``Dual_Path_Model`` (untyped): its ``num_spks``, ``dual_mdl`` and output layers are read here
    masknet: Any

    def __init__(self, encoder: nn.Module, masknet: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder, self.masknet, self.decoder = encoder, masknet, decoder

    @property
    def num_spks(self) -> int:
        return int(self.masknet.num_spks)

    @property
    def blocks(self) -> list[nn.Module]:
        """The dual-path blocks of the masknet, input to output."""
        return list(self.masknet.dual_mdl)

    def architecture(self) -> dict[str, Any]:
        """What was built, read from the modules (a pretrained model's hyperparameters included)."""
        conv: Any = getattr(self.encoder, "conv1d", None)
        block = self.blocks[0] if self.blocks else None
        intra = getattr(getattr(block, "intra_mdl", None), "mdl", None)
        return {
            "class": type(self).__name__,
            "encoder_channels": getattr(conv, "out_channels", None),
            "kernel_size": conv.kernel_size[0] if conv is not None else None,
            "stride": stride[0] if isinstance(stride := getattr(self.decoder, "stride", None), tuple) else None,
            "num_blocks": len(self.blocks),
            "intra_layers": len(getattr(intra, "layers", ())) or None,
            "chunk_size": getattr(self.masknet, "K", None),
            "num_spks": self.num_spks,
            "parameters": sum(p.numel() for p in self.parameters()),
        }

    @property
    def head(self) -> list[nn.Module]:
        """What follows the blocks: the masknet's output layers and the decoder (always trained)."""
        m = self.masknet
        return [m.prelu, m.conv2d, m.output, m.output_gate, m.end_conv1x1, self.decoder]

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        mix_w = self.encoder(mix)  # (batch, channels, frames)
        masks = self.masknet(mix_w)  # (n_sources, batch, channels, frames)
        separated = masks * mix_w.unsqueeze(0)
        estimates = torch.stack([self.decoder(s) for s in separated], dim=-1)  # (batch, time', n_sources)
        length, produced = mix.shape[-1], estimates.shape[1]
        if produced < length:
            return F.pad(estimates, (0, 0, 0, length - produced))
        return estimates[:, :length]


def build_sepformer(config: dict[str, Any], num_spks: int) -> SepFormer:
    """A randomly initialised SepFormer of SpeechBrain's classes (keys as in :data:`SMALL_SEPFORMER`)."""
    from speechbrain.lobes.models.dual_path import (
        Decoder,
        Dual_Path_Model,
        Encoder,
        SBTransformerBlock,
    )

    unknown = set(config) - set(RECIPE_SEPFORMER)
    if unknown:
        raise ConfigError(f"unknown SepFormer option(s) {sorted(unknown)}; known: {', '.join(RECIPE_SEPFORMER)}.")
    c = {**RECIPE_SEPFORMER, **config}

    def transformer(layers: int) -> nn.Module:
        return SBTransformerBlock(
            num_layers=layers,
            d_model=c["d_model"],
            nhead=c["nhead"],
            d_ffn=c["d_ffn"],
            dropout=0.0,
            use_positional_encoding=True,
            norm_before=True,
        )

    encoder = Encoder(kernel_size=c["kernel_size"], out_channels=c["encoder_channels"])
    masknet = Dual_Path_Model(
        in_channels=c["encoder_channels"],
        out_channels=c["d_model"],
        intra_model=transformer(c["intra_layers"]),
        inter_model=transformer(c["inter_layers"]),
        num_layers=c["num_blocks"],
        norm="ln",
        K=c["chunk_size"],
        num_spks=num_spks,
        skip_around_intra=True,
        linear_layer_after_inter_intra=False,
    )
    decoder = Decoder(
        in_channels=c["encoder_channels"], out_channels=1, kernel_size=c["kernel_size"], stride=c["stride"], bias=False
    )
    return SepFormer(encoder, masknet, decoder)


def load_speechbrain_sepformer(model_dir: str | Path, num_spks: int | None = None) -> SepFormer:
    """A SepFormer from a local SpeechBrain model folder (``hyperparams.yaml`` + ``*.ckpt``).

    When ``num_spks`` differs from the model's (a 3-speaker wsj03mix model fine-tuned on 2-speaker data),
    the masknet is rebuilt for ``num_spks`` and every weight but its speaker-dependent output layer loaded.
    """
    from hyperpyyaml import load_hyperpyyaml

    model_dir = Path(model_dir).expanduser()
    hyperparams = model_dir / "hyperparams.yaml"
    if not hyperparams.is_file():
        raise ConfigError(
            f"{model_dir}: no hyperparams.yaml. --pretrained for SepFormer is a local SpeechBrain model folder "
            "(hyperparams.yaml, encoder.ckpt, masknet.ckpt, decoder.ckpt), "
            "e.g. a copy of speechbrain/sepformer-wsj03mix."
        )
    missing = [name for name in _CHECKPOINTS.values() if not (model_dir / name).is_file()]
    if missing:
        raise ConfigError(f"{model_dir}: missing {', '.join(missing)} beside hyperparams.yaml.")
    try:
        with open(hyperparams, encoding="utf-8") as handle:
            declared = load_hyperpyyaml(handle)
    except Exception as error:
        raise ConfigError(f"{hyperparams}: cannot load it with HyperPyYAML: {error}") from None
    modules = declared.get("modules") or {}
    parts = {
        name: modules.get(name, declared.get(key))
        for name, key in (("encoder", "Encoder"), ("masknet", "MaskNet"), ("decoder", "Decoder"))
    }
    absent = [name for name, module in parts.items() if not isinstance(module, nn.Module)]
    if absent:
        raise ConfigError(
            f"{hyperparams}: declares no {', '.join(absent)} module (expected Encoder, MaskNet, Decoder)."
        )
    model = SepFormer(parts["encoder"], parts["masknet"], parts["decoder"])
    states = {
        name: torch.load(model_dir / file, map_location="cpu", weights_only=True) for name, file in _CHECKPOINTS.items()
    }
    rebuilt = num_spks is not None and num_spks != model.num_spks
    if rebuilt:
        assert num_spks is not None  # rebuilt implies it
        logger.warning(
            "%s separates %d sources, the data has %d: the masknet's output layer is re-initialised",
            model_dir,
            model.num_spks,
            num_spks,
        )
        model.masknet = _with_num_spks(model.masknet, num_spks)
        states["masknet"] = {k: v for k, v in states["masknet"].items() if not k.startswith("conv2d.")}
    for name, state in states.items():
        getattr(model, name).load_state_dict(state, strict=not (rebuilt and name == "masknet"))
    return model


def _with_num_spks(masknet: Any, num_spks: int) -> nn.Module:  # masknet: SpeechBrain's Dual_Path_Model
    out_channels = masknet.conv2d.in_channels
    masknet.conv2d = nn.Conv2d(out_channels, out_channels * num_spks, kernel_size=1)
    masknet.num_spks = num_spks
    return masknet


def save_speechbrain_sepformer(model: SepFormer, config: dict[str, Any], model_dir: str | Path) -> Path:
    """Write ``model`` as a SpeechBrain model folder that :func:`load_speechbrain_sepformer` (and
    SpeechBrain's own HyperPyYAML loading) reads: hyperparams.yaml + encoder/masknet/decoder.ckpt."""
    c = {**RECIPE_SEPFORMER, **config}
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "hyperparams.yaml").write_text(_HYPERPARAMS.format(num_spks=model.num_spks, **c), encoding="utf-8")
    for name, file in _CHECKPOINTS.items():
        torch.save(getattr(model, name).state_dict(), model_dir / file)
    return model_dir


_HYPERPARAMS = """\
# SepFormer written by tuner (SpeechBrain HyperPyYAML, as in speechbrain/sepformer-* model cards)
num_spks: {num_spks}
N_encoder_out: {encoder_channels}
out_channels: {d_model}
kernel_size: {kernel_size}
kernel_stride: {stride}

Encoder: !new:speechbrain.lobes.models.dual_path.Encoder
    kernel_size: !ref <kernel_size>
    out_channels: !ref <N_encoder_out>

SBtfintra: !new:speechbrain.lobes.models.dual_path.SBTransformerBlock
    num_layers: {intra_layers}
    d_model: !ref <out_channels>
    nhead: {nhead}
    d_ffn: {d_ffn}
    dropout: 0
    use_positional_encoding: True
    norm_before: True

SBtfinter: !new:speechbrain.lobes.models.dual_path.SBTransformerBlock
    num_layers: {inter_layers}
    d_model: !ref <out_channels>
    nhead: {nhead}
    d_ffn: {d_ffn}
    dropout: 0
    use_positional_encoding: True
    norm_before: True

MaskNet: !new:speechbrain.lobes.models.dual_path.Dual_Path_Model
    num_spks: !ref <num_spks>
    in_channels: !ref <N_encoder_out>
    out_channels: !ref <out_channels>
    num_layers: {num_blocks}
    K: {chunk_size}
    intra_model: !ref <SBtfintra>
    inter_model: !ref <SBtfinter>
    norm: ln
    linear_layer_after_inter_intra: False
    skip_around_intra: True

Decoder: !new:speechbrain.lobes.models.dual_path.Decoder
    in_channels: !ref <N_encoder_out>
    out_channels: 1
    kernel_size: !ref <kernel_size>
    stride: !ref <kernel_stride>
    bias: False

modules:
    encoder: !ref <Encoder>
    decoder: !ref <Decoder>
    masknet: !ref <MaskNet>
"""
