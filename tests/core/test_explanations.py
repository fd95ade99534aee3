"""Occlusion explanations: offsets of the original text, one batch per request, and the word that
decides gets the largest weight."""

from __future__ import annotations

import numpy as np
import pytest

from sentiment_api.core.engine import Classifier
from sentiment_api.core.explanations import count_words, occlusions, variants, words


def test_words_are_whitespace_tokens_with_offsets_of_the_original_text() -> None:
    text = "  I  love\tmy #iPad 😍 "

    found = words(text)

    assert [w.word for w in found] == ["I", "love", "my", "#iPad", "😍"]
    assert all(text[w.start : w.end] == w.word for w in found)
    assert occlusions(text, found)[1] == "  I  \tmy #iPad 😍 "
    assert count_words([text, "two words"]) == 7


def test_variants_put_the_texts_first_then_each_texts_occlusions() -> None:
    batch, found = variants(["a b", "c"])

    assert batch == ["a b", "c", " b", "a ", ""]
    assert [len(f) for f in found] == [2, 1]


class WordCountBackend:
    """A network with known answers: one logit per label, each the count of that label's token."""

    def __init__(self, token_of_label: list[int]) -> None:
        self.token_of_label = token_of_label

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        counts = [((input_ids == token) & (attention_mask == 1)).sum(axis=1) for token in self.token_of_label]
        return np.stack(counts, axis=1).astype(np.float32) * 3.0


@pytest.fixture(scope="module")
def counting(onnx_package):
    """The tiny package's tokenizer and card with a network whose decisive words are known: 'hate'
    for the first label, 'store' for the second, 'love' for the third."""
    package = Classifier.load(onnx_package)
    tokens = [package.tokenise([word]).ids[0][1] for word in ("hate", "store", "love")]
    # without the package's calibration: export fits a temperature that differs from machine to
    # machine, and a small one saturates these logits' probabilities at 1
    card = package.card.model_copy(update={"calibration": None})
    return Classifier(WordCountBackend(tokens), package.tokenizer, card)


def test_the_word_whose_removal_flips_the_label_gets_the_largest_weight(counting) -> None:
    text = "the ipad love at sxsw"

    (explained,) = counting.explain([text])
    flipped = counting.predict([text.replace("love ", "")])[0].label

    assert counting.predict([text])[0].label == counting.labels[2]
    assert flipped != counting.labels[2]
    assert max(explained, key=lambda w: w.weight).word == "love"
    assert all(w.weight == pytest.approx(0.0, abs=1e-6) for w in explained if w.word != "love")


def test_a_word_against_the_label_weighs_negative(counting) -> None:
    (explained,) = counting.explain(["love love hate ipad"])

    weights = {w.word: w.weight for w in explained}
    assert weights["hate"] < 0 < weights["love"]


def test_explanations_match_the_engine_run_on_each_occluded_text(onnx_package) -> None:
    classifier = Classifier.load(onnx_package, threads=1)
    text = "I love my new #iPad at sxsw"

    (explained,) = classifier.explain([text])
    best = classifier.predict([text], top_k=3)[0]
    label = best.labels[0]

    for word in explained:
        without = classifier.predict([text[: word.start] + text[word.end :]], top_k=3)[0]
        expected = best.scores[0] - without.scores[without.labels.index(label)]
        assert word.weight == pytest.approx(expected, abs=1e-5)
