"""Which model packages a service holds: ``DIR`` or ``NAME=DIR`` entries, as ``--model`` takes them.

A plain directory is the model named :data:`DEFAULT_NAME`; ``NAME=DIR`` names one. Names are short
identifiers, so they are safe in a URL, a metric label and a log field.
"""

from __future__ import annotations

import re
from pathlib import Path

DEFAULT_NAME = "default"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def parse_entry(entry: str) -> tuple[str, Path]:
    """``(name, directory)`` of one entry: ``NAME=DIR``, or a plain directory named ``default``."""
    name, equals, directory = entry.partition("=")
    if equals and NAME_PATTERN.fullmatch(name.strip()) and "/" not in name:
        if not directory.strip():
            raise ValueError(f"model {name.strip()!r}: no package directory after '='")
        return name.strip(), Path(directory.strip())
    if equals and "/" not in name:
        raise ValueError(
            f"model name {name.strip()!r} must be 1 to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return DEFAULT_NAME, Path(entry.strip())


def parse_entries(entries: list[str]) -> dict[str, Path]:
    """Every entry's ``name -> directory``, in the order given; a name given twice is an error."""
    packages: dict[str, Path] = {}
    for entry in entries:
        name, directory = parse_entry(entry)
        if name in packages:
            hint = " (a plain directory is the model named 'default')" if name == DEFAULT_NAME else ""
            raise ValueError(f"model {name!r} is given twice{hint}")
        packages[name] = directory
    if not packages:
        raise ValueError("at least one model package is needed")
    return packages
