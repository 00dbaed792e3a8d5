"""Separation metrics: SI-SNR and SDR of estimated sources, and their improvement over the mixture.

Conventions (as SpeechBrain's SepFormer recipes report them):

* SI-SNR uses SpeechBrain's permutation-invariant wrapper (``get_si_snr_with_pitwrapper``): the source
  order that maximises the mean SI-SNR is chosen per mixture, and values are averaged over sources;
* SDR is BSS-eval's signal-to-distortion ratio (a 512-tap distortion filter is allowed, as in
  ``mir_eval.separation.bss_eval_sources``), computed by torchmetrics and likewise permutation invariant;
* ``SI-SNRi`` / ``SDRi`` subtract the value the unprocessed mixture gets as the estimate of every source.

All values are in dB, per mixture; :func:`separation_metrics` averages them over a batch.
"""

from __future__ import annotations

import itertools

import torch

__all__ = ["pit_si_snr", "pit_sdr", "separation_metrics", "si_snr_loss"]


def pit_si_snr(estimates: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
    """Permutation-invariant SI-SNR (dB) per mixture; tensors shaped (batch, time, n_sources)."""
    from speechbrain.nnet.losses import get_si_snr_with_pitwrapper

    return -get_si_snr_with_pitwrapper(sources, estimates)


def si_snr_loss(estimates: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
    """The training loss: negative permutation-invariant SI-SNR, averaged over the batch."""
    return -pit_si_snr(estimates, sources).mean()


def pit_sdr(estimates: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
    """Permutation-invariant BSS-eval SDR (dB) per mixture; tensors shaped (batch, time, n_sources).

    Each (estimate, source) pair is solved on its own: torch 2.11's MKL fails *batched* float64
    ``linalg.solve`` on these machines ("Parameter 6 was incorrect on entry to DLASWP", then "Pivots
    given to lu_solve must all be greater or equal to 1"), which torchmetrics uses for a batch.
    """
    from torchmetrics.functional.audio import signal_distortion_ratio

    n = sources.shape[-1]
    best = []
    for estimate, source in zip(estimates.double(), sources.double()):
        pairwise = torch.stack(
            [torch.stack([signal_distortion_ratio(estimate[:, i], source[:, j]) for j in range(n)]) for i in range(n)]
        )  # pairwise[i, j]: estimate i scored against source j
        best.append(max(pairwise[list(p), list(range(n))].mean() for p in itertools.permutations(range(n))))
    return torch.stack(best).float()


def separation_metrics(estimates: torch.Tensor, sources: torch.Tensor, mixture: torch.Tensor) -> dict[str, float]:
    """Batch means of SI-SNR, SI-SNRi, SDR and SDRi (dB).

    ``estimates`` and ``sources``: (batch, time, n_sources); ``mixture``: (batch, time).
    """
    if estimates.shape != sources.shape:
        raise ValueError(f"estimates {tuple(estimates.shape)} and sources {tuple(sources.shape)} differ in shape")
    baseline = mixture.unsqueeze(-1).expand_as(sources)
    si_snr, si_snr_mix = pit_si_snr(estimates, sources), pit_si_snr(baseline, sources)
    sdr, sdr_mix = pit_sdr(estimates, sources), pit_sdr(baseline, sources)
    return {
        "SI-SNR": float(si_snr.mean()),
        "SI-SNRi": float((si_snr - si_snr_mix).mean()),
        "SDR": float(sdr.mean()),
        "SDRi": float((sdr - sdr_mix).mean()),
    }
