"""Writing outputs so that a failure leaves nothing half-written (stage beside, then rename), and
hashing the files written."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged_file(target: Path) -> Iterator[Path]:
    """A temporary path beside ``target`` (same suffix) that replaces it only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=target.suffix)
    os.close(handle)
    staging = Path(name)
    try:
        yield staging
        staging.chmod(0o644)  # mkstemp makes it private; models and reports are read by others too
        os.replace(staging, target)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


@contextmanager
def staged_directory(target: Path) -> Iterator[Path]:
    """A temporary directory beside ``target`` that replaces it only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        yield staging
        staging.chmod(0o755)  # mkdtemp makes it private
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def cache_dir(kind: str) -> Path:
    """``$XDG_CACHE_HOME/sentiment-api/KIND`` (``~/.cache/sentiment-api/KIND`` by default): where
    what is costly to make and safe to make again is kept between runs (first stages, base models)."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "sentiment-api" / kind


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a staged file."""
    with staged_file(path) as staging:
        staging.write_text(text)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
