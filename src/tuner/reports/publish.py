"""What a worker shows in optuna-dashboard as a study runs: a callback that ``tuner run`` passes to the runner."""

from __future__ import annotations

from typing import TYPE_CHECKING

from typing_extensions import override

from tuner.callbacks import StudyCallback

if TYPE_CHECKING:
    import optuna

__all__ = ["DashboardPublisher"]


class DashboardPublisher(StudyCallback):
    """After each trial, its markdown note (for the first and the best trials); when the run ends, the report's
    figures and the study's note. Never raises: what cannot be written is logged as a warning."""

    @override
    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        from tuner.reports.notes import publish_trial_note

        publish_trial_note(study, trial)

    @override
    def on_study_end(self, study: optuna.Study) -> None:
        from tuner.reports.notes import publish_study

        publish_study(study)
