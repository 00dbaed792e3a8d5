"""The one place that silences the libraries tuner drives: warnings that say nothing actionable to a tuner user,
and loggers whose chatter fills a study's log. ``-vv`` (debug logging) keeps the loggers as they are."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

__all__ = [
    "experimental",
    "quiet_libraries",
    "silence_library_loggers",
    "ignoring",
    "TORCHCODEC_MISSING",
    "WEIGHT_NORM_DEPRECATED",
]

#: library warnings that say nothing actionable about a tuner run
_QUIET = (
    r".*but have no logger configured.*",
    r".*`isinstance\(treespec, LeafSpec\)` is deprecated.*",
    r".*Your `IterableDataset` has `__len__` defined.*",
    r".*target_rate is required by Identity.*",
    r".*does not have many workers which may be a bottleneck.*",
    r".*The number of training batches \(\d+\) is smaller than the logging interval.*",
    r".*`torch.nn.utils.weight_norm` is deprecated.*",  # s3prl's WavLM
    r".*Support for mismatched key_padding_mask and attn_mask is deprecated.*",  # s3prl's WavLM
    r".*when using `ckpt_path`, callbacks used to create the checkpoint need to be provided.*",  # tuner evaluate
    # a retry runs an epoch its trial had reported again (it restarted: its checkpoint was damaged, or that epoch's
    # could not be written): Optuna keeps the first report, the epoch's record is rewritten
    r".*The reported value is ignored because this `step=\d+` is already reported.*",
)
#: pyannote.audio on import, without FFmpeg: torchcodec cannot load (tuner never needs it: it reads audio itself)
TORCHCODEC_MISSING = r"(?s).*torchcodec is not installed correctly"
#: s3prl's WavLM builds its positional convolution with the deprecated ``torch.nn.utils.weight_norm``
WEIGHT_NORM_DEPRECATED = r".*weight_norm.*"
#: loggers that announce the hardware, tips and configurations at INFO (Lightning's "GPU available: False",
#: SpeechBrain's "Applied quirks")
_CHATTY_LOGGERS = ("lightning.pytorch", "s3prl", "speechbrain")


@contextlib.contextmanager
def experimental() -> Iterator[None]:
    """Silence Optuna's ``ExperimentalWarning``: heartbeats, retries, metric names, WilcoxonPruner, ... have been
    'experimental' for years, and are stable; a study file that builds such a pruner runs inside this too."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


@contextlib.contextmanager
def ignoring(message: str = "", category: type[Warning] = Warning) -> Iterator[None]:
    """Ignore, inside the block, the warnings of ``category`` whose message matches ``message`` (a regular
    expression; "" matches any): for one library call whose warnings say nothing a tuner user can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=message, category=category)
        yield


def silence_library_loggers() -> None:
    """Lightning's, s3prl's and SpeechBrain's INFO lines: noise in a study log (kept with -vv)."""
    if not logging.getLogger("tuner").isEnabledFor(logging.DEBUG):
        for name in _CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Training or validating: the library loggers silenced, and their unactionable warnings ignored."""
    silence_library_loggers()
    with warnings.catch_warnings():
        for pattern in _QUIET:
            warnings.filterwarnings("ignore", message=pattern)
        yield
