"""Objectives: one module per fine-tuning task, behind :class:`tuner.objectives.base.Objective`.

Modules are imported on demand (see :data:`tuner.objectives.base.OBJECTIVES`): each pulls in its
heavy library (pyannote.audio, s3prl, SpeechBrain) only when a study uses it.
"""

from tuner.objectives.base import (
    OBJECTIVES,
    FitInputs,
    Objective,
    StepwiseObjective,
    TrainedObjective,
    get_objective_class,
)

__all__ = ["Objective", "TrainedObjective", "StepwiseObjective", "FitInputs", "OBJECTIVES", "get_objective_class"]
