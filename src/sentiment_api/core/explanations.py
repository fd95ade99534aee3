"""Which words decided: occlusion of each word, scored on the same engine as the answer.

A text's words are its whitespace tokens, with their character offsets in the original text. Each
word is removed in turn (the characters between its neighbours kept), and every such variant runs in
the same batch as the text itself; a word's weight is how much the chosen label's probability drops
without it (positive: the word speaks for the label; negative: against it). It costs one model run
per word, in one batch, and needs nothing but the classifier: no gradients, so it works on every
runtime a package runs on (ONNX Runtime int8 included), and it explains the very scores served.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Word:
    """One whitespace token of a text: itself and its character offsets (``text[start:end]``)."""

    word: str
    start: int
    end: int


@dataclass(frozen=True)
class WordWeight:
    """A word and how much removing it lowered the chosen label's probability."""

    word: str
    start: int
    end: int
    weight: float


def words(text: str) -> list[Word]:
    """The whitespace tokens of ``text`` with their offsets."""
    return [Word(match.group(), match.start(), match.end()) for match in _WORD.finditer(text)]


def occlusions(text: str, found: Sequence[Word]) -> list[str]:
    """``text`` once without each word in ``found``, in their order."""
    return [text[: word.start] + text[word.end :] for word in found]


def count_words(texts: Sequence[str]) -> int:
    """Words over all ``texts``: the extra model runs explaining them costs."""
    return sum(len(_WORD.findall(text)) for text in texts)


def variants(texts: Sequence[str]) -> tuple[list[str], list[list[Word]]]:
    """The texts followed by every occluded variant of each, and each text's words: what one batch
    runs to answer and explain ``texts``."""
    found = [words(text) for text in texts]
    batch = list(texts)
    for text, its_words in zip(texts, found, strict=True):
        batch.extend(occlusions(text, its_words))
    return batch, found


def attributions(probabilities: np.ndarray, found: Sequence[Sequence[Word]]) -> list[list[WordWeight]]:
    """Each text's word weights from the probabilities of the batch :func:`variants` built (the
    texts' rows first, then their variants' rows in the same order), for each text's best label."""
    count = len(found)
    originals = probabilities[:count]
    explained: list[list[WordWeight]] = []
    row = count
    for original, its_words in zip(originals, found, strict=True):
        label = int(np.argmax(original))
        without = probabilities[row : row + len(its_words), label]
        row += len(its_words)
        explained.append(
            [
                WordWeight(word.word, word.start, word.end, float(original[label] - dropped))
                for word, dropped in zip(its_words, without, strict=True)
            ]
        )
    return explained
