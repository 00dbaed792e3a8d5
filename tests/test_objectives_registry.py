"""The objective registry's facts known without importing the objectives match the classes."""

from __future__ import annotations

from tuner.objectives.base import FOLDER_EXPORTS, OBJECTIVES, get_objective_class


def test_folder_exports_are_the_objectives_that_export_a_folder():
    assert {name for name in OBJECTIVES if get_objective_class(name).exports_folder} == FOLDER_EXPORTS
    assert FOLDER_EXPORTS  # the pipeline exports a Pipeline.from_pretrained folder
