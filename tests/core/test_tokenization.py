"""The tokenizer the server runs, fed arbitrary Unicode: never fails, never exceeds the model's
length, and takes time bounded by the text's length."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentiment_api.core.model_card import ModelCard
from sentiment_api.core.settings import default_model_dir
from sentiment_api.core.text import get_normaliser
from sentiment_api.core.tokenization import TweetTokenizer

CARD = ModelCard.load(default_model_dir())
TOKENIZER = TweetTokenizer.from_file(default_model_dir(), CARD.max_length, CARD.pad_token_id)
VOCABULARY = TOKENIZER._tokenizer.get_vocab_size()
ANY_TEXT = st.text(st.characters(codec="utf-8"), max_size=2000)  # what JSON can carry


@given(st.lists(ANY_TEXT, min_size=1, max_size=8))
@settings(deadline=None)  # a pause of the machine is not a failure; time is bounded below
def test_any_unicode_encodes_within_the_model_length_and_vocabulary(texts: list[str]) -> None:
    encoded = TOKENIZER.encode(texts)

    assert len(encoded.ids) == len(encoded.truncated) == len(texts)
    for ids, truncated in zip(encoded.ids, encoded.truncated, strict=True):
        assert 2 <= len(ids) <= CARD.max_length  # at least the special tokens, at most the model's length
        assert all(0 <= token < VOCABULARY for token in ids)
        if truncated:
            assert len(ids) == CARD.max_length


@given(st.lists(ANY_TEXT, min_size=1, max_size=8))
@settings(deadline=None)  # a pause of the machine is not a failure; time is bounded below
def test_normalised_any_unicode_pads_into_one_batch(texts: list[str]) -> None:
    normalise = get_normaliser(CARD.normaliser)
    encoded = TOKENIZER.encode([normalise(text) for text in texts])

    input_ids, mask = TOKENIZER.pad(encoded.ids)

    assert input_ids.shape == mask.shape == (len(texts), max(map(len, encoded.ids)))
    assert mask.sum(axis=1).tolist() == [len(ids) for ids in encoded.ids]
    assert np.all(input_ids[mask == 0] == CARD.pad_token_id)


@pytest.mark.parametrize(
    "text",
    [
        "a " * 50_000,
        "\U0001f600 " * 50_000,
        "café " * 20_000,
        "supercalifragilistic " * 5_000,
        "#ipad" * 20_000,
    ],
    ids=["letters", "emoji", "accents", "words", "hashtags"],
)
def test_a_text_far_longer_than_allowed_is_cut_in_bounded_time(text: str) -> None:
    started = time.perf_counter()
    encoded = TOKENIZER.encode([text])

    assert time.perf_counter() - started < 2.0
    assert len(encoded.ids[0]) == CARD.max_length and encoded.truncated == [True]
