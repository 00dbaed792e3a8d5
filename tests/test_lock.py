"""The dependency lock: it pins every range pyproject.toml allows, and this venv is what it pins."""

from __future__ import annotations

import os
import re
from importlib import metadata

import pytest
import tomllib
from conftest import REPO
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

LOCK = REPO / "requirements.lock"


def _locked() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of every package in the lock."""
    pins: dict[str, tuple[str, list[str]]] = {}
    current = None
    for line in LOCK.read_text().splitlines():
        pin = re.match(r"^([A-Za-z0-9_.\-]+)==([^ \\]+)", line)
        if pin:
            current = canonicalize_name(pin.group(1))
            pins[current] = (pin.group(2), [])
        elif current and (digest := re.search(r"--hash=sha256:([0-9a-f]{64})", line)):
            pins[current][1].append(digest.group(1))
    return pins


def _declared() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    return [Requirement(r) for r in [*project["dependencies"], *extras.get("test", []), *extras.get("dev", [])]]


def test_every_locked_package_is_pinned_with_its_hashes():
    pins = _locked()
    assert len(pins) > 50  # torch, pyannote.audio, lightning, optuna... and what they need
    assert [name for name, (_, hashes) in pins.items() if not hashes] == []


@pytest.mark.parametrize("requirement", _declared(), ids=str)
def test_the_lock_satisfies_every_range_of_pyproject(requirement):
    """A range changed in pyproject.toml without `make lock` fails here."""
    version, _ = _locked().get(canonicalize_name(requirement.name), (None, []))
    assert version is not None, f"{requirement.name} is not in requirements.lock: run `make lock`"
    assert requirement.specifier.contains(version, prereleases=True), (
        f"requirements.lock pins {requirement.name}=={version}, outside pyproject's {requirement}: run `make lock`"
    )


def test_torch_and_torchaudio_are_pinned_as_a_pair():
    declared = {r.name: str(r.specifier) for r in _declared()}
    assert declared["torch"] == "==2.11.0" and declared["torchaudio"] == "==2.11.0"  # 2.11.1 fails beside 2.11.0


@pytest.mark.skipif(os.environ.get("TUNER_UNLOCKED") == "1", reason="make test-latest runs without the lock")
def test_this_environment_is_the_locked_one():
    """`make install` installs exactly the lock: what runs the tests is what a fresh machine gets."""
    different = {}
    for name, (version, _) in _locked().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            different[name] = (version, installed)
    assert different == {}, f"locked vs installed: {different} (run `make install` after `make lock`)"
