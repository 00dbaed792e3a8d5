"""The objective registry's facts known without importing the objectives match the classes."""

from __future__ import annotations

import pytest

from tuner.objectives.base import OBJECTIVES, get_objective_class, objective_entry


def test_folder_exports_are_the_objectives_that_export_a_folder():
    folder_exports = {name for name, entry in OBJECTIVES.items() if entry.exports_folder}
    assert {name for name in OBJECTIVES if get_objective_class(name).exports_folder} == folder_exports
    assert folder_exports  # the pipeline exports a Pipeline.from_pretrained folder


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_each_entry_agrees_with_its_class(name):
    from tuner.reports.objective_figures import FIGURE_KINDS

    entry = OBJECTIVES[name]
    cls = get_objective_class(name)
    assert entry.target == f"{cls.__module__}:{cls.__name__}" and cls.name == name
    assert entry.exports_folder == cls.exports_folder
    assert (entry.unit, entry.figure) == (cls.unit, cls.figure)  # the class declares them; the entry repeats them
    assert entry.figure in FIGURE_KINDS  # a figure the reports draw, not an objective name


def test_objective_entry_of_an_unknown_or_missing_objective():
    assert objective_entry("wavlm_sv") is OBJECTIVES["wavlm_sv"]
    assert objective_entry("no_such_objective") is None and objective_entry(None) is None
