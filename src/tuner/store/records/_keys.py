"""The keys of the record layout (see :mod:`tuner.store.records`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeGuard

if TYPE_CHECKING:
    pass

# -- keys ------------------------------------------------------------------------------------------------
#: study attributes recorded on first use (their values come from the objective and the study file)
STUDY_KEYS = (
    "objective", "data", "pretrained", "pretrained_source", "options", "metric", "direction", "components", "prune_on",
    "max_epochs", "n_trials", "trainer", "precision", "accumulate_grad_batches", "seed", "search_space",
    "search_space_file", "tuner_version", "description", "confirms", "problem",
)  # fmt: skip
PROBLEM = "problem"  # what defines the study's problem (tuner.identity.fingerprint); absent in older studies
EXTENSIONS = "space_extensions"  # the extensions of its search space (tuner run --extend-space), oldest first
BASELINE = "baseline"
BASELINE_LABEL = "baseline_label"
WARM_START = "warm_start"
TEST = "test"
#: a confirmation study: the study whose configurations it trains again (study attribute); a confirmation
#: run: which configuration it repeats and which search trials ran it (trial attribute)
CONFIRMS = "confirms"

CONFIG = "config"
SEED = "seed"
MAX_EPOCHS = "max_epochs"
#: trial system attribute: the table of the trial's per-epoch records
EPOCHS = "tuner:epochs"
#: the per-epoch user attributes of stores written before :data:`EPOCHS` (``epoch/007``), still read
EPOCH_PREFIX = "epoch/"
BEST_DETAILS = "details/best"
EPOCHS_RUN = "epochs_run"
BEST_EPOCH = "best_epoch"
SECONDS = "seconds"
MODEL = "model"
FAIL_REASON = "fail_reason"
#: failures of the trial and those it retries that were not its own (a full artifact folder): retries not counted
RETRIES_NOT_COUNTED = "retries_not_counted"
RESUMED_FROM = "resumed_from"
#: trial system attribute: the trial's latest checkpoint ``{artifact_id, epoch, host, at, sha256, bytes}``
CHECKPOINT = "tuner:checkpoint"


def epoch_key(epoch: int) -> str:
    """The key under which stores written before the compact layout hold the record of ``epoch``
    (``epoch/007``); tuner reads these and writes :data:`EPOCHS` instead."""
    return f"{EPOCH_PREFIX}{epoch:03d}"


def _finite(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


STEPS = "steps"
RESULT = "result"


class TrialAttrs:
    """A trial's attributes collected in memory: what the trial writers below write into, in place of a live
    ``optuna.Trial``, to build trials without running them (``optuna.trial.create_trial(user_attrs=...,
    system_attrs=...)``; see :mod:`tuner.testing.large_study`)."""

    def __init__(
        self, user_attrs: Mapping[str, Any] | None = None, system_attrs: Mapping[str, Any] | None = None
    ) -> None:
        self._user: dict[str, Any] = dict(user_attrs or {})
        self._system: dict[str, Any] = dict(system_attrs or {})

    @property
    def user_attrs(self) -> dict[str, Any]:
        return dict(self._user)

    @property
    def system_attrs(self) -> dict[str, Any]:
        return dict(self._system)

    def set_user_attr(self, key: str, value: Any) -> None:
        self._user[key] = value

    def set_system_attr(self, key: str, value: Any) -> None:
        self._system[key] = value
