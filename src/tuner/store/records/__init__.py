"""The store's record layout: what tuner writes to a study and its trials, and the one way to read it back.

Everything tuner keeps lives in Optuna's own tables, so stock ``optuna`` and optuna-dashboard read it:

Study user attributes, written when ``tuner run`` first creates the study (:func:`write_study`):
    ``objective``, ``data``, ``pretrained``, ``options``, ``metric``, ``direction``, ``components``,
    ``prune_on``, ``max_epochs``, ``n_trials``, ``trainer``, ``precision``, ``accumulate_grad_batches``,
    ``seed``, ``search_space``, ``search_space_file``, ``tuner_version``, ``description``, ``problem`` (what
    defines the study's problem, compared when it is opened again: :mod:`tuner.identity`); then ``baseline``
    (the validation metrics of the model before fine-tuning, :func:`write_baseline`), ``warm_start`` (what
    was enqueued), ``space_extensions`` (each ``--extend-space``: when, old and new, :func:`write_problem`) and
    ``test`` (``tuner evaluate``'s figures of the study's choice; ``test/trial/N`` those of a trial asked for by
    number, :func:`write_test`).

Trial user attributes (:func:`start_trial`, :func:`finish_trial`, ...):
    ``config`` (searched + fixed parameters), ``seed``, ``max_epochs``, ``details/best`` (small data of the
    best epoch, e.g. a DET curve), ``epochs_run``, ``best_epoch``, ``seconds``, ``model`` (sizes, device, and
    the ``precision`` and ``accumulate_grad_batches`` its Trainer ran with), ``fail_reason`` (a failed trial:
    why), ``retries_not_counted`` (how many of its failures were its artifact folder's, not its own: not
    counted against the retry limit), ``resumed_from`` (a retry: which trial, after which epoch, and why that
    one stopped; ``discarded``: the inherited checkpoint it could not use, and why), ``warm_start`` (the name of
    a warm-start configuration).

Trial system attributes: :data:`EPOCHS` (every finished epoch's record, :func:`write_epoch`),
:data:`CHECKPOINT` (while the trial runs, its latest checkpoint in the artifact store, with its SHA-256 and size,
and under ``best`` its best epoch's; once it finished, the one it kept: its best epoch's) and Optuna's own retry
bookkeeping, read through ``RetryHeartbeatStaleTrialCallback``.

The per-epoch records (metric, components, ``lr``, ``seconds``) are one table per trial, the system
attribute ``tuner:epochs = {"columns": ["epoch", "DER", ...], "rows": [[0, 0.52, ...], [1, 0.41, ...]]}``,
rewritten after each epoch (a value an epoch did not log is ``null``). Stores written before this layout hold
one user attribute ``epoch/NNN`` per epoch instead (``{"DER": 0.52, ...}``): they are read the same way
(:func:`epochs_from_attrs`), a trial with both (a retry of an old trial, which inherits its attributes)
reads the union, and nothing needs migrating. optuna-dashboard sends every trial's user attributes with
every trial list and stock Optuna reads them with each trial: one system attribute instead of one user
attribute per epoch is what keeps the first load of a study of 10,000 trials within seconds. A person
still sees the records of the trials that matter in optuna-dashboard (the notes of the first and the best
trials, :mod:`tuner.reports.notes`), the value reported every epoch as the trial's intermediate values, and
all of them in ``tuner report`` (``STUDY.epochs.csv``).

Readers never touch ``user_attrs`` themselves: :meth:`StudyRecord.of` and :meth:`TrialRecord.of` give
typed records with every fallback decided here once (a study from an older tuner, a trial that never
finished an epoch, a retry that inherited its predecessor's attributes).
"""

from __future__ import annotations

from tuner.store.records._keys import (  # noqa: F401 (the layout's one namespace)
    BASELINE,
    BASELINE_LABEL,
    BEST_DETAILS,
    BEST_EPOCH,
    CHECKPOINT,
    CONFIG,
    CONFIRMS,
    EPOCH_PREFIX,
    EPOCHS,
    EPOCHS_RUN,
    EXTENSIONS,
    FAIL_REASON,
    MAX_EPOCHS,
    MODEL,
    PROBLEM,
    RESULT,
    RESUMED_FROM,
    RETRIES_NOT_COUNTED,
    SECONDS,
    SEED,
    STEPS,
    STUDY_KEYS,
    TEST,
    WARM_START,
    TrialAttrs,
    epoch_key,
)
from tuner.store.records._read import (  # noqa: F401 (the layout's one namespace)
    StudyRecord,
    TrialRecord,
    checkpoint_digest,
    epochs_from_attrs,
    epochs_of,
    evaluated_label,
    paired_text,
    retried_from,
    study_trials,
    superseded_numbers,
)
from tuner.store.records._write import (  # noqa: F401 (the layout's one namespace)
    checkpoint_of,
    confirmation_attrs,
    fail_stale_trial,
    fail_trial,
    finish_trial,
    inherited_seed,
    is_confirmation_run,
    name_metric,
    retries_not_counted,
    stale_reason,
    start_trial,
    warm_start_attrs,
    write_baseline,
    write_best_details,
    write_checkpoint,
    write_epoch,
    write_problem,
    write_resumed_from,
    write_steps,
    write_study,
    write_test,
    write_warm_start,
)

__all__ = [
    "StudyRecord",
    "TrialRecord",
    "study_trials",
    "epochs_of",
    "epochs_from_attrs",
    "TrialAttrs",
    "superseded_numbers",
    "epoch_key",
    "write_study",
    "write_baseline",
    "name_metric",
    "write_warm_start",
    "start_trial",
    "write_epoch",
    "write_best_details",
    "write_resumed_from",
    "retried_from",
    "inherited_seed",
    "finish_trial",
    "fail_trial",
    "retries_not_counted",
    "stale_reason",
    "fail_stale_trial",
    "CHECKPOINT",
    "checkpoint_of",
    "write_checkpoint",
    "checkpoint_digest",
    "write_problem",
]
