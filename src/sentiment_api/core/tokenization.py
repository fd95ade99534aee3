"""Tokenisation with Hugging Face ``tokenizers`` alone, the same at training and at serving time.

``transformers`` is only needed to fetch a tokenizer for a base model; from then on the model
directory carries ``tokenizer.json`` and this module is all that reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sentiment_api.core.errors import ModelError

TOKENIZER_FILE = "tokenizer.json"


@dataclass(frozen=True)
class Encoded:
    """Token ids per text, and whether each text was cut to the maximum length."""

    ids: list[list[int]]
    truncated: list[bool]

    def lengths(self) -> np.ndarray:
        """Number of tokens of each text."""
        return np.fromiter((len(ids) for ids in self.ids), dtype=np.int64, count=len(self.ids))


class TweetTokenizer:
    """A ``tokenizers.Tokenizer`` set to truncate at ``max_length`` and never to pad by itself."""

    def __init__(self, tokenizer: object, max_length: int, pad_id: int) -> None:
        from tokenizers import Tokenizer

        if not isinstance(tokenizer, Tokenizer):
            raise TypeError("expected a tokenizers.Tokenizer")
        self._tokenizer = tokenizer
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length)
        self.max_length = max_length
        self.pad_id = pad_id

    @classmethod
    def from_file(cls, path: Path, max_length: int, pad_id: int) -> TweetTokenizer:
        """Load ``tokenizer.json`` (or the one inside a model directory)."""
        from tokenizers import Tokenizer

        path = Path(path)
        if path.is_dir():
            path = path / TOKENIZER_FILE
        if not path.is_file():
            raise ModelError(f"{path}: tokenizer file not found")
        return cls(Tokenizer.from_file(str(path)), max_length, pad_id)

    def save(self, path: Path) -> None:
        """Write ``tokenizer.json``."""
        self._tokenizer.save(str(path))

    def encode(self, texts: Sequence[str]) -> Encoded:
        """Token ids of each text (with the model's special tokens), truncated to ``max_length``."""
        encodings = self._tokenizer.encode_batch(list(texts))
        return Encoded(
            ids=[encoding.ids for encoding in encodings],
            truncated=[bool(encoding.overflowing) for encoding in encodings],
        )

    def pad(self, ids: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """``input_ids`` and ``attention_mask`` (int64) padded to the longest sequence given."""
        width = max(len(row) for row in ids)
        input_ids = np.full((len(ids), width), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(ids), width), dtype=np.int64)
        for row, sequence in enumerate(ids):
            input_ids[row, : len(sequence)] = sequence
            attention_mask[row, : len(sequence)] = 1
        return input_ids, attention_mask


def length_buckets(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Indices grouped into batches of similar length, so padding costs next to nothing."""
    order = np.argsort(lengths, kind="stable")
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
