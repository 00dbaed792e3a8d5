"""CAM++ speaker embeddings (Wang et al., "CAM++: A Fast and Efficient Network for Speaker Verification Using
Context-Aware Masking", Interspeech 2023) as a pyannote.audio ``Model``.

The architecture of 3D-Speaker's ``speakerlab.models.campplus`` (Apache-2.0), written here so that its
published weights load by name (``head.*``, ``xvector.*``) and the model plugs into pyannote's speaker
diarization pipeline: ``forward(waveforms, weights=None)`` returns one embedding per waveform, and
pyannote's frame ``weights`` (a speaker's activity in a chunk) weight the statistics pooling, as pyannote
does for its WeSpeaker models.

- front end: 80 Kaldi log-mel filterbanks (25 ms / 10 ms), mean-normalised over the input;
- FCM head: a 2-D residual convolution stack over (frequency, time), frequency reduced 8x;
- D-TDNN: a strided TDNN layer, then three densely connected blocks of context-aware-masking TDNN layers
  (12, 24 and 16 layers, growth 32) with transition layers halving the channels;
- statistics pooling (weighted mean and standard deviation), a linear layer and a batch norm without
  affine parameters: a 192-dimensional embedding, compared with cosine similarity.

:func:`load_campplus` builds the model from a 3D-Speaker state dict (``campplus_cn_en_common.pt``);
:func:`save_pyannote_checkpoint` writes it as a ``pytorch_model.bin`` that ``Model.from_pretrained`` loads.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from pyannote.audio import Model
from pyannote.audio.core.task import Problem, Resolution, Specifications
from pyannote.audio.models.blocks.pooling import StatsPool
from torch import nn
from torchaudio.compliance import kaldi

if TYPE_CHECKING:
    from pyannote.audio.core.task import Task

__all__ = ["CAMPPlus", "load_campplus", "save_pyannote_checkpoint"]


def _norm_relu(channels: int, affine: bool = True, two_d: bool = False) -> nn.Sequential:
    norm = (nn.BatchNorm2d if two_d else nn.BatchNorm1d)(channels, affine=affine)
    return nn.Sequential(OrderedDict([("batchnorm", norm), ("relu", nn.ReLU(inplace=True))]))


class _ResBlock(nn.Module):
    """3x3 residual block of the FCM head; ``stride`` reduces frequency only."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=(stride, 1), padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=(stride, 1), bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.shortcut(x))


class _FCM(nn.Module):
    """Front-end convolution module: (batch, mels, frames) -> (batch, channels * mels / 8, frames)."""

    def __init__(self, channels: int = 32, mels: int = 80) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.layer1 = nn.Sequential(_ResBlock(channels, channels, stride=2), _ResBlock(channels, channels))
        self.layer2 = nn.Sequential(_ResBlock(channels, channels, stride=2), _ResBlock(channels, channels))
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.out_channels = channels * (mels // 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x.unsqueeze(1))))
        out = F.relu(self.bn2(self.conv2(self.layer2(self.layer1(out)))))
        batch, channels, mels, frames = out.shape
        return out.reshape(batch, channels * mels, frames)


class _TDNN(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__()
        padding = (kernel_size - 1) // 2
        self.linear = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.nonlinear = _norm_relu(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x))


class _CAMLayer(nn.Module):
    """A TDNN layer whose output is masked by the context: the utterance mean plus 100-frame segment means."""

    def __init__(self, channels: int, out_channels: int, kernel_size: int, dilation: int, segment: int = 100) -> None:
        super().__init__()
        padding = (kernel_size - 1) // 2 * dilation
        self.linear_local = nn.Conv1d(
            channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False
        )
        self.linear1 = nn.Conv1d(channels, channels // 2, 1)
        self.relu = nn.ReLU(inplace=True)
        self.linear2 = nn.Conv1d(channels // 2, out_channels, 1)
        self.segment = segment

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[-1]
        segments = F.avg_pool1d(x, kernel_size=self.segment, stride=self.segment, ceil_mode=True)
        segment_means = segments.repeat_interleave(self.segment, dim=-1)[..., :frames]
        context = x.mean(dim=-1, keepdim=True) + segment_means
        return self.linear_local(x) * torch.sigmoid(self.linear2(self.relu(self.linear1(context))))


class _DenseTDNNLayer(nn.Module):
    def __init__(self, in_channels: int, growth: int, bottleneck: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.nonlinear1 = _norm_relu(in_channels)
        self.linear1 = nn.Conv1d(in_channels, bottleneck, 1, bias=False)
        self.nonlinear2 = _norm_relu(bottleneck)
        self.cam_layer = _CAMLayer(bottleneck, growth, kernel_size, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))


class _DenseTDNNBlock(nn.Module):
    """``layers`` CAM layers, each fed the concatenation of the block input and every earlier output."""

    def __init__(self, layers: int, in_channels: int, growth: int, bottleneck: int, kernel_size: int, dilation: int):
        super().__init__()
        for i in range(layers):
            layer = _DenseTDNNLayer(in_channels + i * growth, growth, bottleneck, kernel_size, dilation)
            self.add_module(f"tdnnd{i + 1}", layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.children():
            x = torch.cat([x, layer(x)], dim=1)
        return x


class _Transit(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.nonlinear = _norm_relu(in_channels)
        self.linear = nn.Conv1d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.nonlinear(x))


class _Dense(nn.Module):
    """Linear projection of the pooled statistics, then a batch norm without affine parameters."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.linear = nn.Conv1d(in_channels, out_channels, 1, bias=False)
        self.nonlinear = nn.Sequential(OrderedDict([("batchnorm", nn.BatchNorm1d(out_channels, affine=False))]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x.unsqueeze(-1)).squeeze(-1))


class CAMPPlus(Model):
    """CAM++ speaker-embedding model (16 kHz mono in, ``embedding_size`` out), a pyannote.audio ``Model``."""

    #: (layers, kernel size, dilation) of the three dense blocks
    BLOCKS = ((12, 3, 1), (24, 3, 2), (16, 3, 2))

    def __init__(
        self,
        sample_rate: int = 16000,
        num_channels: int = 1,
        num_mel_bins: int = 80,
        embedding_size: int = 192,
        growth_rate: int = 32,
        bn_size: int = 4,
        init_channels: int = 128,
        task: Task | None = None,
    ) -> None:
        super().__init__(sample_rate=sample_rate, num_channels=num_channels, task=task)
        self.save_hyperparameters("num_mel_bins", "embedding_size", "growth_rate", "bn_size", "init_channels")
        self.head = _FCM(mels=num_mel_bins)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["tdnn"] = _TDNN(self.head.out_channels, init_channels, 5, stride=2)
        channels = init_channels
        for i, (count, kernel_size, dilation) in enumerate(self.BLOCKS, start=1):
            layers[f"block{i}"] = _DenseTDNNBlock(
                count, channels, growth_rate, bn_size * growth_rate, kernel_size, dilation
            )
            channels += count * growth_rate
            layers[f"transit{i}"] = _Transit(channels, channels // 2)
            channels //= 2
        layers["out_nonlinear"] = _norm_relu(channels)
        layers["dense"] = _Dense(channels * 2, embedding_size)
        self.xvector = nn.Sequential(layers)
        self.pool = StatsPool()
        if task is None:  # what an embedding model is, for pyannote (and for its saved checkpoints)
            self.specifications = Specifications(
                problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK, duration=10.0
            )

    @property
    def dimension(self) -> int:
        return self.hparams["embedding_size"]

    def fbank(self, waveforms: torch.Tensor) -> torch.Tensor:
        """(batch, 1, samples) -> (batch, frames, mels): Kaldi log-mel filterbanks, mean-normalised."""
        features = torch.stack(
            [
                kaldi.fbank(
                    w,
                    num_mel_bins=self.hparams["num_mel_bins"],
                    sample_frequency=self.hparams["sample_rate"],
                    dither=0.0,
                )
                for w in waveforms
            ]
        )
        return features - features.mean(dim=1, keepdim=True)

    # pyannote's Model.forward(waveforms, **kwargs) is narrowed here as in pyannote's own embedding models
    def forward(self, waveforms: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        """(batch, 1, samples) waveforms -> (batch, embedding_size); ``weights`` (batch, frames) at any frame
        rate weight the statistics pooling (pyannote passes a speaker's activity)."""
        x = self.head(self.fbank(waveforms).transpose(1, 2))
        for name, layer in self.xvector.named_children():
            if name == "dense":
                break
            x = layer(x)
        return self.xvector.get_submodule("dense")(self.pool(x, weights=weights))


def load_campplus(state_dict_path: str | Path) -> CAMPPlus:
    """CAM++ with the weights of a 3D-Speaker state dict (every key must match), in eval mode."""
    state = torch.load(str(state_dict_path), map_location="cpu", weights_only=True)
    model = CAMPPlus()
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{state_dict_path}: not a CAM++ state dict ({len(missing)} weights missing, e.g. "
            f"{missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]})"
        )
    return model.eval()


def save_pyannote_checkpoint(model: Model, path: str | Path) -> Path:
    """Write ``model`` as a checkpoint ``pyannote.audio.Model.from_pretrained`` loads (what pyannote's own
    ``Model.on_save_checkpoint`` records: versions, architecture, specifications; plus the state dict and
    hyper-parameters Lightning rebuilds the model from)."""
    import lightning
    import pyannote.audio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": lightning.__version__,
        "pyannote.audio": {
            "versions": {"pyannote.audio": pyannote.audio.__version__},
            "architecture": {"module": type(model).__module__, "class": type(model).__name__},
            "specifications": model.specifications,
        },
    }
    torch.save(checkpoint, path)
    return path
