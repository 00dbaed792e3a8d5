"""Diarization corpora: a pyannote.database protocol, from a ``database.yml`` or seed 001's folder layout.

Accepted forms of ``--data``:

* ``demo`` (or nothing): the demo corpus generated from pyannote.audio's sample speech;
* a directory in seed 001's layout: ``train.txt dev.txt test.txt`` (one uri per line) and, per split,
  ``<split>/wav/<uri>.wav|flac``, ``<split>/rttm/<uri>.rttm``, ``<split>/uem/<uri>.uem`` (uem optional);
* a directory holding a ``database.yml``, or the path of a ``database.yml``, optionally followed by
  ``:Database.SpeakerDiarization.Protocol`` when the file declares several protocols.

Everything is validated before the first trial: audio readable by soundfile, RTTM and UEM lines
well-formed, no empty split. Errors name the file (and line) and what to do.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tuner.data.annotations import read_rttm, read_uem
from tuner.data.audio import audio_info
from tuner.errors import DataError

__all__ = ["DiarizationCorpus", "resolve_diarization_corpus"]

logger = logging.getLogger(__name__)

_SUBSETS = {"train": "train", "development": "dev", "test": "test"}
_AUDIO_EXTENSIONS = ("wav", "flac")


@dataclass(frozen=True)
class DiarizationCorpus:
    """A pyannote.database speaker-diarization protocol defined in ``database_yml``."""

    database_yml: Path
    protocol_name: str

    def __str__(self) -> str:
        return f"{self.database_yml}:{self.protocol_name}"

    def protocol(self) -> Any:
        """The pyannote.database protocol, with ``audio`` resolved to paths and ``annotated`` filled in."""
        from pyannote.database import FileFinder
        from pyannote.database.registry import Registry

        registry = Registry()
        registry.load_database(self.database_yml)
        preprocessors = {"audio": FileFinder(registry=registry), "annotated": _annotated_or_whole_file}
        return registry.get_protocol(self.protocol_name, preprocessors=preprocessors)

    # -- validation --------------------------------------------------------------------------
    def validate(self) -> dict[str, Any]:
        """Check every file of the train and development subsets; return a summary per subset."""
        subsets = self._subset_config()
        protocol = self.protocol()
        summary: dict[str, Any] = {}
        for subset in ("train", "development"):
            files = _list_files(protocol, subset, self)
            if not files:
                raise DataError(
                    f"{self}: the {subset} subset is empty. Add uris to its list "
                    f"({subsets.get(subset, {}).get('uri', '?')}): tuning needs training files and "
                    "development files to compute the validation DER."
                )
            seconds = 0.0
            for file in files:
                seconds += self._validate_file(file, subsets.get(subset, {}), subset)
            summary[subset] = {"files": len(files), "hours": round(seconds / 3600.0, 4)}
            logger.info("%s: %d %s files, %.1f min of audio", self, len(files), subset, seconds / 60)
        return summary

    def _validate_file(self, file: Any, config: dict[str, Any], subset: str) -> float:
        uri = file["uri"]
        try:
            path = Path(file["audio"])
        except (FileNotFoundError, ValueError) as error:
            raise DataError(
                f"{self}: no audio file for uri '{uri}' ({subset} subset): {error}. "
                f"Put {uri}.wav (or .flac) where 'Databases' in {self.database_yml} points, or remove "
                f"'{uri}' from the {subset} list."
            ) from None
        info = audio_info(path)
        for key, reader in (("annotation", read_rttm), ("annotated", read_uem)):
            template = config.get(key)
            if isinstance(template, str):
                annotation_path = self._resolve(template.format(uri=uri, database=file["database"]))
                if not annotation_path.is_file():
                    raise DataError(
                        f"{annotation_path}: file not found ({key} of uri '{uri}', {subset} subset, "
                        f"declared in {self.database_yml}). Add it or remove '{uri}' from the list."
                    )
                records = reader(annotation_path)
                if key == "annotation" and not any(turn.uri == uri for turn in records):
                    logger.warning("%s has no turn for uri '%s': the file is all non-speech", annotation_path, uri)
        return info.duration

    def _subset_config(self) -> dict[str, dict[str, Any]]:
        config = yaml.safe_load(self.database_yml.read_text(encoding="utf-8")) or {}
        database, task, name = self.protocol_name.split(".")
        try:
            return dict(config["Protocols"][database][task][name])
        except (KeyError, TypeError):
            return {}

    def _resolve(self, path: str) -> Path:
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else self.database_yml.parent / candidate


def _annotated_or_whole_file(file: Any) -> Any:
    """``annotated`` preprocessor: the UEM's regions when the protocol has them, else the whole file."""
    from pyannote.core import Segment, Timeline

    precomputed = getattr(file, "_store", {}).get("annotated")
    if precomputed is not None:
        return precomputed
    return Timeline([Segment(0.0, audio_info(file["audio"]).duration)], uri=file["uri"])


def _list_files(protocol: Any, subset: str, corpus: DiarizationCorpus) -> list[Any]:
    try:
        return list(getattr(protocol, subset)())
    except FileNotFoundError as error:
        raise DataError(
            f"{corpus}: a file of the {subset} subset is missing: {error}. Check the paths in "
            f"{corpus.database_yml}."
        ) from None
    except Exception as error:  # pyannote.database parse errors: say which protocol
        raise DataError(f"{corpus}: cannot read the {subset} subset: {error}") from None


def resolve_diarization_corpus(data: str | Path | None, workdir: str | Path = "storage") -> DiarizationCorpus:
    """The corpus ``data`` names (see the module docstring); validation is a separate step."""
    workdir = Path(workdir)
    if data is None or str(data) == "demo":
        from tuner.data.demo import ensure_diarization_corpus

        root = ensure_diarization_corpus(workdir / "demo" / "diarization")
        return DiarizationCorpus(root / "database.yml", "Demo.SpeakerDiarization.Default")

    text = str(data)
    protocol_name: str | None = None
    path = Path(text).expanduser()
    if not path.exists() and ":" in text:
        head, _, tail = text.rpartition(":")
        if Path(head).expanduser().exists():
            path, protocol_name = Path(head).expanduser(), tail
    if not path.exists():
        raise DataError(
            f"data not found: {path}. Give a directory in seed 001's layout (train.txt, dev.txt, "
            "test.txt, <split>/wav|rttm|uem/), a directory holding database.yml, a database.yml "
            "path (optionally ':Database.SpeakerDiarization.Protocol'), or 'demo'."
        )
    path = path.resolve()
    if path.is_dir():
        if (path / "database.yml").is_file():
            path = path / "database.yml"
        elif (path / "train.txt").is_file():
            return DiarizationCorpus(_layout_database_yml(path, workdir), f"{_database_name(path)}.SpeakerDiarization.Default")
        else:
            raise DataError(
                f"{path}: neither a database.yml nor seed 001's layout (train.txt, dev.txt, test.txt "
                "and train/ dev/ test/ folders with wav/ rttm/ uem/). See README, 'Bring your corpus'."
            )
    return DiarizationCorpus(path, protocol_name or _single_protocol(path))


def _single_protocol(database_yml: Path) -> str:
    try:
        config = yaml.safe_load(database_yml.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise DataError(f"{database_yml}: invalid YAML: {error}") from None
    names = [
        f"{database}.SpeakerDiarization.{name}"
        for database, tasks in (config.get("Protocols") or {}).items()
        for name in ((tasks or {}).get("SpeakerDiarization") or {})
    ]
    if len(names) != 1:
        found = ", ".join(names) or "none"
        raise DataError(
            f"{database_yml}: name one SpeakerDiarization protocol as '{database_yml}:<protocol>' "
            f"(found: {found})."
        )
    return names[0]


def _database_name(root: Path) -> str:
    name = "".join(c for c in root.name.title() if c.isalnum()) or "Corpus"
    return name if name[0].isalpha() else f"C{name}"


def _layout_database_yml(root: Path, workdir: Path) -> Path:
    """Write a database.yml for a corpus in seed 001's layout (in tuner's cache, not in the corpus)."""
    lists = {subset: root / f"{split}.txt" for subset, split in _SUBSETS.items()}
    missing = [str(p) for subset, p in lists.items() if subset != "test" and not p.is_file()]
    if missing:
        raise DataError(f"{root}: missing uri list(s) {missing}; seed 001's layout needs train.txt and dev.txt.")
    database = _database_name(root)
    sources = [str(root / split / "wav" / f"{{uri}}.{ext}") for split in _SUBSETS.values() for ext in _AUDIO_EXTENSIONS]
    protocol: dict[str, Any] = {"scope": "file"}
    for subset, split in _SUBSETS.items():
        if not lists[subset].is_file():
            continue
        entry = {"uri": str(lists[subset]), "annotation": str(root / split / "rttm" / "{uri}.rttm")}
        if (root / split / "uem").is_dir():
            entry["annotated"] = str(root / split / "uem" / "{uri}.uem")
        protocol[subset] = entry
    config = {"Databases": {database: sources}, "Protocols": {database: {"SpeakerDiarization": {"Default": protocol}}}}
    text = yaml.safe_dump(config, sort_keys=False)
    digest = hashlib.sha1(text.encode()).hexdigest()[:12]
    out = workdir / "cache" / "protocols" / f"{database}-{digest}" / "database.yml"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    return out
