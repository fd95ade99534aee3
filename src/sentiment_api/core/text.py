"""Tweet normalisation: named, versioned, and the same at training and at serving time.

A model records the normaliser it was trained with (``name`` and ``version`` in its card), so the
engine can apply exactly the same cleaning to the text it serves.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass

from sentiment_api.core.errors import ConfigError

_URL = re.compile(r"http[s]?://\S+|www\.\S+")
_MENTION = re.compile(r"\.?@\w+\.?")
_OUTSIDE_ALPHABET = re.compile(r"[^A-Za-z0-9\s.,!?'\";:()&\-#]")


def _clean_legacy(text: str) -> str:
    """The earlier service's cleaning, step by step as ``shared/data/README.md`` describes it."""
    text = text.lower()
    text = html.unescape(text)
    text = text.replace("{link}", "")
    text = _URL.sub("", text)
    text = _MENTION.sub("", text)
    text = _OUTSIDE_ALPHABET.sub("", text)
    return text.strip()


def _identity(text: str) -> str:
    return text


@dataclass(frozen=True)
class Normaliser:
    """A text-cleaning function with the name and version a model card records."""

    name: str
    version: int
    clean: Callable[[str], str]

    def __call__(self, text: str) -> str:
        return self.clean(text)

    @property
    def key(self) -> str:
        """``name@version``, the form used in options and model cards."""
        return f"{self.name}@{self.version}"


NORMALISERS: dict[str, Normaliser] = {
    n.key: n
    for n in (
        Normaliser("legacy", 1, _clean_legacy),
        Normaliser("none", 1, _identity),
    )
}
DEFAULT_NORMALISER = "legacy@1"


def get_normaliser(key: str) -> Normaliser:
    """Look a normaliser up by ``name@version`` (or a bare name, meaning its newest version)."""
    if "@" not in key:
        versions = [n for n in NORMALISERS.values() if n.name == key]
        if versions:
            return max(versions, key=lambda n: n.version)
    elif key in NORMALISERS:
        return NORMALISERS[key]
    known = ", ".join(sorted(NORMALISERS))
    raise ConfigError(f"unknown normaliser {key!r}; known normalisers: {known}")
