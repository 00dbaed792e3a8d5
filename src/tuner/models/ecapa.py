"""ECAPA-TDNN speaker-embedding head (Desplanques et al., Interspeech 2020) over frame features.

Padding is handled exactly: every tensor fed to a convolution is zeroed beyond each item's length, and
the means and the attention ignore padded frames, so in eval mode an item's embedding does not depend on
how much (or what) padding follows it. In training mode the batch-norm statistics still see padded
frames, as in the usual implementations.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ECAPATDNN"]

#: Smallest variance (before the square root) in statistics pooling, to keep gradients finite.
_VARIANCE_FLOOR = 1e-5


def _frame_mask(lengths: torch.Tensor | None, frames: int, device: torch.device) -> torch.Tensor | None:
    """(batch, 1, frames) float mask of valid frames, or None when every frame is valid."""
    if lengths is None:
        return None
    lengths = torch.as_tensor(lengths, device=device)
    if lengths.ndim != 1:
        raise ValueError(f"lengths must be 1-D (frames per item), got shape {tuple(lengths.shape)}")
    if bool((lengths < 1).any()) or bool((lengths > frames).any()):
        raise ValueError(f"lengths must be between 1 and the number of frames ({frames})")
    positions = torch.arange(frames, device=device)
    return (positions[None, :] < lengths[:, None]).unsqueeze(1).float()


def _apply_mask(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return x if mask is None else x * mask


def _masked_mean_std(x: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean and standard deviation over time of (batch, channels, frames); weights sum to 1."""
    mean = (x * weights).sum(dim=2)
    variance = ((x - mean.unsqueeze(2)).pow(2) * weights).sum(dim=2)
    return mean, variance.clamp(min=_VARIANCE_FLOOR).sqrt()


def _uniform_weights(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Weights giving the plain mean over valid frames, broadcastable to ``x``."""
    if mask is None:
        return torch.full_like(x[:, :1, :], 1.0 / x.shape[2])
    return mask / mask.sum(dim=2, keepdim=True)


class _ConvUnit(nn.Module):
    """Conv1d -> ReLU -> BatchNorm, with the output zeroed on padded frames."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1) -> None:
        super().__init__()
        padding = dilation * (kernel_size - 1) // 2
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation, padding=padding)
        self.norm = nn.BatchNorm1d(out_channels)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return _apply_mask(self.norm(torch.relu(self.conv(x))), mask)


class _Res2Conv(nn.Module):
    """Res2Net dilated convolution: ``scale`` channel groups, each seeing the previous group's output."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, scale: int) -> None:
        super().__init__()
        if scale < 2 or channels % scale:
            raise ValueError(f"channels ({channels}) must be a multiple of scale ({scale}), scale >= 2")
        width = channels // scale
        self.scale = scale
        self.units = nn.ModuleList(_ConvUnit(width, width, kernel_size, dilation) for _ in range(scale - 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        groups = torch.chunk(x, self.scale, dim=1)
        outputs = [groups[0]]
        previous: torch.Tensor | None = None
        for group, unit in zip(groups[1:], self.units):
            previous = unit(group if previous is None else group + previous, mask)
            outputs.append(previous)
        return torch.cat(outputs, dim=1)


class _SqueezeExcitation(nn.Module):
    """Channel gates from the mean over valid frames (squeeze) through a bottleneck (excitation)."""

    def __init__(self, channels: int, bottleneck: int) -> None:
        super().__init__()
        self.reduce = nn.Linear(channels, bottleneck)
        self.expand = nn.Linear(bottleneck, channels)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        summary = (x * _uniform_weights(x, mask)).sum(dim=2)
        gates = torch.sigmoid(self.expand(torch.relu(self.reduce(summary))))
        return x * gates.unsqueeze(2)


class _SERes2Block(nn.Module):
    """1x1 conv -> Res2 dilated conv -> 1x1 conv -> squeeze-excitation, plus the residual input."""

    def __init__(self, channels: int, dilation: int, scale: int, se_bottleneck: int) -> None:
        super().__init__()
        self.pre = _ConvUnit(channels, channels)
        self.res2 = _Res2Conv(channels, kernel_size=3, dilation=dilation, scale=scale)
        self.post = _ConvUnit(channels, channels)
        self.se = _SqueezeExcitation(channels, se_bottleneck)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        y = self.post(self.res2(self.pre(x, mask), mask), mask)
        return self.se(y, mask) + x


class _AttentiveStatisticsPooling(nn.Module):
    """Channel- and context-dependent attentive mean and standard deviation over valid frames.

    The attention of each channel and frame sees the frame and the global (utterance) mean and
    standard deviation; padded frames get zero weight.
    """

    def __init__(self, channels: int, attention_channels: int) -> None:
        super().__init__()
        self.hidden = _ConvUnit(3 * channels, attention_channels)
        self.score = nn.Conv1d(attention_channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        frames = x.shape[2]
        mean, std = _masked_mean_std(x, _uniform_weights(x, mask))
        context = torch.cat(
            [x, mean.unsqueeze(2).expand(-1, -1, frames), std.unsqueeze(2).expand(-1, -1, frames)], dim=1
        )
        logits = self.score(torch.tanh(self.hidden(context, mask)))
        if mask is not None:
            logits = logits.masked_fill(mask == 0, torch.finfo(logits.dtype).min)
        weights = torch.softmax(logits, dim=2)
        mean, std = _masked_mean_std(x, weights)
        return torch.cat([mean, std], dim=1)


class ECAPATDNN(nn.Module):
    """ECAPA-TDNN: (batch, frames, in_dim) features (+ valid lengths) -> (batch, emb_dim) embeddings.

    Conv(k=5) -> three SE-Res2 blocks (dilations 2, 3, 4) -> multi-layer feature aggregation (the
    three block outputs concatenated, 1x1 conv to ``3 * channels``) -> attentive statistics pooling ->
    BatchNorm -> Linear to ``emb_dim`` (-> BatchNorm when ``output_norm``).
    """

    def __init__(
        self,
        in_dim: int,
        channels: int = 512,
        emb_dim: int = 256,
        scale: int = 8,
        se_bottleneck: int = 128,
        attention_channels: int = 128,
        output_norm: bool = False,
    ) -> None:
        super().__init__()
        if min(in_dim, channels, emb_dim, se_bottleneck, attention_channels) < 1:
            raise ValueError("in_dim, channels, emb_dim, se_bottleneck, attention_channels must be positive")
        self.in_dim = in_dim
        self.emb_dim = emb_dim
        self.front = _ConvUnit(in_dim, channels, kernel_size=5)
        self.blocks = nn.ModuleList(_SERes2Block(channels, dilation, scale, se_bottleneck) for dilation in (2, 3, 4))
        self.aggregate = _ConvUnit(3 * channels, 3 * channels)
        self.pooling = _AttentiveStatisticsPooling(3 * channels, attention_channels)
        self.pooled_norm = nn.BatchNorm1d(6 * channels)
        self.embedding = nn.Linear(6 * channels, emb_dim)
        self.output_norm = nn.BatchNorm1d(emb_dim) if output_norm else None

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Embeddings of ``features`` (batch, frames, in_dim); ``lengths`` counts each item's valid frames."""
        if features.ndim != 3 or features.shape[2] != self.in_dim:
            raise ValueError(f"expected features of shape (batch, frames, {self.in_dim}), got {tuple(features.shape)}")
        x = features.transpose(1, 2)
        mask = _frame_mask(lengths, x.shape[2], x.device)
        x = self.front(_apply_mask(x, mask), mask)
        outputs = []
        for block in self.blocks:
            x = block(x, mask)
            outputs.append(x)
        x = self.aggregate(torch.cat(outputs, dim=1), mask)
        embeddings = self.embedding(self.pooled_norm(self.pooling(x, mask)))
        if self.output_norm is not None:
            embeddings = self.output_norm(embeddings)
        return embeddings
