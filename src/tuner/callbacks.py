"""Side effects of running a study, as callbacks: what a worker does besides training is passed in, never built in.

A callback of :func:`tuner.run_study` is anything Optuna's ``study.optimize(callbacks=...)`` takes: a callable
``(study, finished_trial)`` run after each trial this worker finished. A :class:`StudyCallback` is one that also
hears when the worker's run ends. ``tuner run`` passes :class:`tuner.reports.publish.DashboardPublisher`
(optuna-dashboard notes after each trial, the report's figures at the end); a user's own callbacks use the
same interface.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

__all__ = ["StudyCallback"]


class StudyCallback:
    """A callback of :func:`tuner.run_study` with a second hook.

    Contract: :meth:`__call__` runs after each trial this worker finished (complete, pruned or failed), in the
    worker's process, before the next trial starts; :meth:`on_study_end` runs once when the worker's run ends
    normally (the queue is empty, the timeout passed, a callback stopped the study, or there was nothing to
    run), never after Ctrl-C or a store failure. A callback may call ``study.stop()``. Neither hook should
    raise: an exception there stops the worker, as in Optuna.
    """

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """After each trial this worker finished (default: nothing)."""

    def on_study_end(self, study: optuna.Study) -> None:
        """Once, when this worker's run of the study ends normally (default: nothing)."""
