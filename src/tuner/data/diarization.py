"""Diarization corpora: a pyannote.database protocol, from a ``database.yml`` or the pyannote folder layout.

Accepted forms of ``--data``:

* ``demo`` (or nothing): the demo corpus generated from pyannote.audio's sample speech;
* a directory in the pyannote folder layout: ``train.txt dev.txt test.txt`` (one uri per line) and, per split,
  ``<split>/wav/<uri>.wav|flac``, ``<split>/rttm/<uri>.rttm``, ``<split>/uem/<uri>.uem`` (uem optional);
* a directory holding a ``database.yml``, or the path of a ``database.yml``, optionally followed by
  ``:Database.SpeakerDiarization.Protocol`` when the file declares several protocols.

Everything is validated before the first trial: audio readable by soundfile, RTTM and UEM lines
well-formed, no empty split. Errors name the file (and line) and what to do.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tuner._yaml import parse_yaml
from tuner.data._text import read_text_lines, reading
from tuner.data.annotations import read_rttm, read_uem_records
from tuner.data.audio import AudioInfo, audio_info
from tuner.errors import DataError

__all__ = ["DiarizationCorpus", "resolve_diarization_corpus"]

logger = logging.getLogger(__name__)

_SUBSETS = {"train": "train", "development": "dev", "test": "test"}
_AUDIO_EXTENSIONS = ("wav", "flac", "m4a", "mp3", "opus", "aac")  # found in this order


@dataclass(frozen=True)
class DiarizationCorpus:
    """A pyannote.database speaker-diarization protocol defined in ``database_yml``."""

    database_yml: Path
    protocol_name: str

    def __str__(self) -> str:
        return f"{self.database_yml}:{self.protocol_name}"

    def protocol(self, validate_on: str = "development") -> Any:
        """The pyannote.database protocol, with ``audio`` resolved to paths and ``annotated`` filled in.

        ``validate_on="test"``: the same protocol with its test subset in the place of the development one,
        which is the subset pyannote's tasks validate on (``tuner evaluate``).
        """
        from pyannote.database import FileFinder
        from pyannote.database.registry import Registry

        self._subset_config()  # a clear error for an unknown protocol name
        registry = Registry()
        registry.load_database(self.database_yml)
        preprocessors: dict[str, Callable[[Any], Any]] = {
            "audio": FileFinder(registry=registry),
            "annotated": _annotated_or_whole_file,
        }
        protocol = registry.get_protocol(self.protocol_name, preprocessors=preprocessors)
        return protocol if validate_on == "development" else _validating_on(protocol, validate_on)

    def files(self, subset: str) -> list[Any]:
        """The files of ``subset`` (``train``, ``development``, ``test``) with their audio, annotation and
        annotated regions."""
        return _list_files(self.protocol(), subset, self)

    # -- validation --------------------------------------------------------------------------
    def validate(
        self,
        sample_rate: int | None = None,
        chunk_duration: float | None = None,
        subsets: tuple[str, ...] = ("train", "development"),
    ) -> dict[str, Any]:
        """Check every file of ``subsets`` (train and development: what a study uses); return a summary per
        subset.

        RTTM and UEM files are read by tuner's strict readers first (errors name ``file:line``), then
        the protocol is listed through pyannote.database and every audio header is checked (readable,
        complete, not empty), as is every UEM region and RTTM turn against its audio's duration.
        ``sample_rate`` is the model's: files at another rate are named in a warning (pyannote resamples
        them chunk by chunk). ``chunk_duration`` is the task's: pyannote skips every evaluated region
        (UEM region, else whole file) shorter than a chunk, in training and validation alike, so those
        are named in a warning, and a subset left with none is an error.
        """
        declared = self._subset_config()
        spans = {subset: self._validate_annotations(subset, declared.get(subset) or {}) for subset in subsets}
        protocol = self.protocol()
        summary: dict[str, Any] = {}
        off_rate: dict[int, list[Path]] = {}
        for subset in subsets:
            files = _list_files(protocol, subset, self)
            seconds = 0.0
            regions: list[_Span] = []
            for file in files:
                info = self._audio_info(file, subset)
                mine = spans[subset].get(file["uri"], [])
                for span in mine:
                    span.check_within(info)
                if sample_rate is not None and info.sample_rate != sample_rate:
                    off_rate.setdefault(info.sample_rate, []).append(info.path)
                seconds += info.duration
                uem = [span for span in mine if span.kind == "annotated"]
                regions += uem or [_Span("annotated", info.path, None, file["uri"], 0.0, info.duration)]
            if chunk_duration is not None:
                self._check_region_lengths(subset, regions, chunk_duration)
            summary[subset] = {"files": len(files), "hours": round(seconds / 3600.0, 4)}
            logger.info("%s: %d %s files, %.1f min of audio", self, len(files), subset, seconds / 60)
        if off_rate and sample_rate is not None:
            _warn_sample_rates(off_rate, sample_rate)
        return summary

    def _check_region_lengths(self, subset: str, regions: list[_Span], chunk_duration: float) -> None:
        """pyannote drops every region shorter than a chunk: none left is an error, some a warning."""
        short = [region for region in regions if region.end - region.start < chunk_duration]
        if not short:
            return
        example = short[0]
        lost = sum(region.end - region.start for region in short)
        what = f"{len(short)} of the {len(regions)} evaluated regions"
        found = (
            f"{self}: {what} of the {subset} subset ({lost:.1f} s) are shorter than the {chunk_duration:g} s "
            f"chunks pyannote cuts, so it never uses them, e.g. {example.where}: "
            f"{'UEM region' if example.line is not None else 'the whole file'} {example.start:.3f}-{example.end:.3f} s "
            f"of uri '{example.uri}'"
        )
        fix = "merge or lengthen the UEM regions, or give the study a shorter chunk (options={'duration': ...})"
        if len(short) == len(regions):
            raise DataError(f"{found}. That leaves the {subset} subset with no audio at all: {fix}.")
        logger.warning("%s. To use them, %s.", found, fix)

    def _validate_annotations(self, subset: str, config: dict[str, Any]) -> dict[str, list[_Span]]:
        """Read the subset's RTTM and UEM files; return each uri's turns and regions (to check against
        the audio). A per-uri file (``{uri}`` in its template) must hold lines of that uri only, and every
        uri needs a UEM region when the protocol declares UEM files."""
        uri_list = config.get("uri")
        uris = self._read_uris(uri_list, subset) if isinstance(uri_list, str) else []
        if not uris and subset == "test":
            raise DataError(
                f"{self}: no test subset ({uri_list or 'no test uri list declared'}). Evaluating a study needs test "
                "files: add test.txt (one uri per line) with test/wav, test/rttm (and test/uem) in the pyannote folder "
                f"layout, or a 'test' subset to the protocol in {self.database_yml}."
            )
        if not uris:
            raise DataError(
                f"{self}: the {subset} subset is empty. Add uris to its list ({uri_list or 'no uri list declared'}): "
                "tuning needs training files and development files to compute the validation DER."
            )
        spans: dict[str, list[_Span]] = {}
        for key, reader in (("annotation", _rttm_spans), ("annotated", _uem_spans)):
            template = config.get(key)
            if not isinstance(template, str):
                continue
            records: dict[Path, list[_Span]] = {}
            for uri in uris:
                path = self._resolve(template.format(uri=uri, database=self.protocol_name.split(".")[0]))
                if path not in records:
                    if not path.is_file():
                        raise DataError(
                            f"{path}: file not found ({key} of uri '{uri}', {subset} subset, declared in "
                            f"{self.database_yml}). Add it or remove '{uri}' from {uri_list}."
                        )
                    records[path] = reader(path)
                mine = [span for span in records[path] if span.uri == uri]
                if "{uri}" in template:
                    stray = next((span for span in records[path] if span.uri != uri), None)
                    if stray is not None:
                        raise DataError(
                            f"{stray.where}: {stray.what} of uri '{stray.uri}', but this file is the {_KIND[key]} of "
                            f"uri '{uri}' ({subset} subset, '{template}' in {self.database_yml}), so pyannote would "
                            f"ignore the line. Fix the uri on this line (was the file renamed?) or move the line to "
                            f"the file of '{stray.uri}'."
                        )
                if key == "annotation" and not mine:
                    logger.warning("%s has no turn for uri '%s': the whole file counts as non-speech", path, uri)
                if key == "annotated" and not mine:
                    raise DataError(
                        f"{path}: no UEM region for uri '{uri}' ({subset} subset), so none of its audio would be "
                        f"used. Add a line '{uri} 1 <start> <end>' (e.g. the whole file: '{uri} 1 0.000 "
                        f"<duration>') or remove '{uri}' from {uri_list}."
                    )
                spans.setdefault(uri, []).extend(mine)
        return spans

    def _read_uris(self, uri_list: str, subset: str) -> list[str]:
        path = self._resolve(uri_list)
        if not path.is_file():
            raise DataError(f"{path}: uri list of the {subset} subset not found (declared in {self.database_yml}).")
        return [line.strip() for line in read_text_lines(path, "uri list") if line.strip()]

    def _audio_info(self, file: Any, subset: str) -> AudioInfo:
        uri = file["uri"]
        try:
            path = Path(file["audio"])
        except (FileNotFoundError, ValueError) as error:
            raise DataError(
                f"{self}: no audio file for uri '{uri}' ({subset} subset): {error}. "
                f"Put {uri}.wav (or .flac) where 'Databases' in {self.database_yml} points, or remove "
                f"'{uri}' from the {subset} list."
            ) from None
        return audio_info(path)

    def _subset_config(self) -> dict[str, dict[str, Any]]:
        declared = _protocols(_load_database_yml(self.database_yml), self.database_yml)
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


_KIND = {"annotation": "RTTM file", "annotated": "UEM file"}
#: how far past the end of its audio a UEM region may reach (rounding; tuner pads waveforms a little more)
_UEM_TOLERANCE = 0.01


@dataclass(frozen=True)
class _Span:
    """A turn (RTTM) or an evaluated region (UEM) read from ``path``:``line``, to check against its audio."""

    kind: str  # "annotation" (RTTM turn) or "annotated" (UEM region)
    path: Path
    line: int | None
    uri: str
    start: float
    end: float

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}" if self.line is not None else str(self.path)

    @property
    def what(self) -> str:
        return "RTTM turn" if self.kind == "annotation" else "UEM region"

    def check_within(self, audio: AudioInfo) -> None:
        """A UEM region must end within the audio (pyannote crops training chunks from it); an RTTM turn
        must start within it."""
        if self.kind == "annotated":
            outside, edge, at = self.end > audio.duration + _UEM_TOLERANCE, "ends", self.end
            limit_hint = f" (a UEM region may end at {audio.duration:.3f} s at most)"
        else:
            outside, edge, at, limit_hint = self.start >= audio.duration, "starts", self.start, ""
        if outside:
            raise DataError(
                f"{self.where}: {self.what} {self.start:.3f}-{self.end:.3f} s of uri '{self.uri}' {edge} at "
                f"{at:.3f} s, after the end of its audio ({audio.path} lasts {audio.duration:.3f} s). Fix the times "
                f"on this line{limit_hint}, or check that the audio file is the complete recording."
            )


def _rttm_spans(path: Path) -> list[_Span]:
    return [_Span("annotation", path, t.line, t.uri, t.start, t.end) for t in read_rttm(path)]


def _uem_spans(path: Path) -> list[_Span]:
    return [_Span("annotated", path, line, uri, start, end) for line, uri, start, end in read_uem_records(path)]


def _warn_sample_rates(off_rate: dict[int, list[Path]], sample_rate: int) -> None:
    """One warning for the files whose rate is not the model's (pyannote resamples them on the fly)."""
    count = sum(len(paths) for paths in off_rate.values())
    examples = ", ".join(f"{paths[0]} ({rate} Hz)" for rate, paths in sorted(off_rate.items()))
    lower = min(off_rate) < sample_rate
    logger.warning(
        "%d audio file(s) are not at the model's %d Hz, e.g. %s: pyannote resamples every training chunk of "
        "them, which slows training%s. Resample the corpus once, e.g. `sox in.wav -r %d out.wav`.",
        count,
        sample_rate,
        examples,
        " (and upsampled audio lacks the high frequencies the model was built for)" if lower else "",
        sample_rate,
    )


def _load_database_yml(path: Path) -> dict[str, Any]:
    """The content of a pyannote.database ``database.yml``; syntax errors name ``path:line``."""
    with reading(path, "database.yml"):
        text = path.read_text(encoding="utf-8")
    config = parse_yaml(text, path, DataError) or {}
    if not isinstance(config, dict):
        raise DataError(
            f"{path}: a database.yml is a mapping with 'Databases' and 'Protocols' keys, got {type(config).__name__}; "
            "see pyannote.database's documentation or the demo corpus's database.yml."
        )
    return config


def _protocols(config: dict[str, Any], path: Path) -> dict[str, dict[str, Any]]:
    """``{"Db.SpeakerDiarization.Name": {subset: entry}}`` declared in the content of the database.yml
    ``path``; a level that is not a mapping is a DataError naming its key."""

    def mapping(value: Any, key: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise DataError(
                f"{path}: '{key}' must be a mapping, got {type(value).__name__}. A protocol is declared as "
                "Protocols > <Database> > SpeakerDiarization > <Protocol> > train|development|test > "
                "uri|annotation|annotated (see the demo corpus's database.yml)."
            )
        return value

    out: dict[str, dict[str, Any]] = {}
    for database, tasks in mapping(config.get("Protocols"), "Protocols").items():
        where = f"Protocols.{database}.SpeakerDiarization"
        protocols = mapping(mapping(tasks, f"Protocols.{database}").get("SpeakerDiarization"), where)
        for name, subsets in protocols.items():
            subsets = mapping(subsets, f"{where}.{name}")
            for subset, entry in subsets.items():
                if subset in _SUBSETS:
                    mapping(entry, f"{where}.{name}.{subset}")
            out[f"{database}.SpeakerDiarization.{name}"] = dict(subsets)
    return out


def _validating_on(protocol: Any, subset: str) -> Any:
    """A copy of ``protocol`` whose ``development()`` yields another of its subsets (pyannote's tasks validate
    on the development subset; ``tuner evaluate`` validates the same way on the test one). Still an instance
    of the protocol's class, which pyannote's tasks check."""
    import copy

    proxy = copy.copy(protocol)
    proxy.development = getattr(protocol, subset)  # the instance attribute shadows the method
    return proxy


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
            f"{corpus}: a file of the {subset} subset is missing: {error}. Check the paths in {corpus.database_yml}."
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
            f"data not found: {path}. Give a directory in the pyannote folder layout (train.txt, dev.txt, "
            "test.txt, <split>/wav|rttm|uem/), a directory holding database.yml, a database.yml "
            "path (optionally ':Database.SpeakerDiarization.Protocol'), or 'demo'."
        )
    path = path.resolve()
    if path.is_dir():
        if (path / "database.yml").is_file():
            path = path / "database.yml"
        elif (path / "train.txt").is_file():
            return DiarizationCorpus(
                _layout_database_yml(path, workdir), f"{_database_name(path)}.SpeakerDiarization.Default"
            )
        else:
            raise DataError(
                f"{path}: neither a database.yml nor the pyannote folder layout (train.txt, dev.txt, test.txt "
                "and train/ dev/ test/ folders with wav/ rttm/ uem/). See README, 'Bring your corpus'."
            )
    return DiarizationCorpus(path, protocol_name or _single_protocol(path))


def _single_protocol(database_yml: Path) -> str:
    names = list(_protocols(_load_database_yml(database_yml), database_yml))
    if len(names) != 1:
        found = ", ".join(names) or "none"
        raise DataError(
            f"{database_yml}: name one SpeakerDiarization protocol as '{database_yml}:<protocol>' (found: {found})."
        )
    return names[0]


def _database_name(root: Path) -> str:
    name = "".join(c for c in root.name.title() if c.isalnum()) or "Corpus"
    return name if name[0].isalpha() else f"C{name}"


def _layout_database_yml(root: Path, workdir: Path) -> Path:
    """Write a database.yml for a corpus in the pyannote folder layout (in tuner's cache, not in the corpus)."""
    lists = {subset: root / f"{split}.txt" for subset, split in _SUBSETS.items()}
    missing = [str(p) for subset, p in lists.items() if subset != "test" and not p.is_file()]
    if missing:
        raise DataError(
            f"{root}: missing uri list(s) {missing}; the pyannote folder layout needs train.txt and dev.txt."
        )
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
