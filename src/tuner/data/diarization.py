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

        self._subset_config()  # a clear error for an unknown protocol name
        registry = Registry()
        registry.load_database(self.database_yml)
        preprocessors = {"audio": FileFinder(registry=registry), "annotated": _annotated_or_whole_file}
        return registry.get_protocol(self.protocol_name, preprocessors=preprocessors)

    # -- validation --------------------------------------------------------------------------
    def validate(self) -> dict[str, Any]:
        """Check every file of the train and development subsets; return a summary per subset.

        RTTM and UEM files are read by tuner's strict readers first (errors name ``file:line``), then
        the protocol is listed through pyannote.database and every audio file is checked.
        """
        subsets = self._subset_config()
        for subset in ("train", "development"):
            self._validate_annotations(subset, subsets.get(subset) or {})
        protocol = self.protocol()
        summary: dict[str, Any] = {}
        for subset in ("train", "development"):
            files = _list_files(protocol, subset, self)
            seconds = sum(self._audio_duration(file, subset) for file in files)
            summary[subset] = {"files": len(files), "hours": round(seconds / 3600.0, 4)}
            logger.info("%s: %d %s files, %.1f min of audio", self, len(files), subset, seconds / 60)
        return summary

    def _validate_annotations(self, subset: str, config: dict[str, Any]) -> None:
        uri_list = config.get("uri")
        uris = self._read_uris(uri_list, subset) if isinstance(uri_list, str) else []
        if not uris:
            raise DataError(
                f"{self}: the {subset} subset is empty. Add uris to its list ({uri_list or 'no uri list declared'}): "
                "tuning needs training files and development files to compute the validation DER."
            )
        for key, reader in (("annotation", read_rttm), ("annotated", read_uem)):
            template = config.get(key)
            if not isinstance(template, str):
                continue
            checked: set[Path] = set()
            for uri in uris:
                path = self._resolve(template.format(uri=uri, database=self.protocol_name.split(".")[0]))
                if path in checked:
                    continue
                if not path.is_file():
                    raise DataError(
                        f"{path}: file not found ({key} of uri '{uri}', {subset} subset, declared in "
                        f"{self.database_yml}). Add it or remove '{uri}' from {uri_list}."
                    )
                records = reader(path)
                if key == "annotation" and "{uri}" in template and not any(t.uri == uri for t in records):
                    logger.warning("%s has no turn for uri '%s': the whole file counts as non-speech", path, uri)
                checked.add(path)

    def _read_uris(self, uri_list: str, subset: str) -> list[str]:
        path = self._resolve(uri_list)
        if not path.is_file():
            raise DataError(f"{path}: uri list of the {subset} subset not found (declared in {self.database_yml}).")
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def _audio_duration(self, file: Any, subset: str) -> float:
        uri = file["uri"]
        try:
            path = Path(file["audio"])
        except (FileNotFoundError, ValueError) as error:
            raise DataError(
                f"{self}: no audio file for uri '{uri}' ({subset} subset): {error}. "
                f"Put {uri}.wav (or .flac) where 'Databases' in {self.database_yml} points, or remove "
                f"'{uri}' from the {subset} list."
            ) from None
        return audio_info(path).duration

    def _subset_config(self) -> dict[str, dict[str, Any]]:
        try:
            config = yaml.safe_load(self.database_yml.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as error:
            raise DataError(f"{self.database_yml}: cannot read it: {error}") from None
        declared = _protocols(config)
        if self.protocol_name not in declared:
            raise DataError(
                f"{self.database_yml}: no SpeakerDiarization protocol '{self.protocol_name}' (expected the form "
                f"Database.SpeakerDiarization.Protocol). Declared: {', '.join(declared) or 'none'}."
            )
        return declared[self.protocol_name]

    def _resolve(self, path: str) -> Path:
        """As pyannote.database resolves protocol paths: as given (absolute or from the working
        directory) if that file exists, else relative to the database.yml's folder."""
        candidate = Path(path).expanduser()
        if candidate.is_absolute() or candidate.is_file():
            return candidate
        return self.database_yml.parent / candidate


def _protocols(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"Db.SpeakerDiarization.Name": {subset: entry}}`` declared in a database.yml's content."""
    out: dict[str, dict[str, Any]] = {}
    for database, tasks in (config.get("Protocols") or {}).items():
        for name, subsets in ((tasks or {}).get("SpeakerDiarization") or {}).items():
            out[f"{database}.SpeakerDiarization.{name}"] = dict(subsets or {})
    return out


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

        root = ensure_diarization_corpus(workdir / "demo" / "diarization").resolve()
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
    names = list(_protocols(config))
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
