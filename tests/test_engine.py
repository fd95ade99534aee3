import numpy as np

from sentiment_api.engine import Classifier, softmax


def test_softmax_is_stable_and_normalised() -> None:
    probabilities = softmax(np.array([[1000.0, 1000.0, 0.0], [0.0, 1.0, 2.0]]))
    assert np.allclose(probabilities.sum(axis=1), 1)
    assert np.allclose(probabilities[0], [0.5, 0.5, 0.0])


def test_length_bucketing_returns_results_in_input_order(trained_tiny_bert) -> None:
    classifier = Classifier.load(trained_tiny_bert)
    texts = ["love", "the worst broken app ever " * 3, "session at the store", "great"]
    together, _ = classifier.probabilities_of_clean(texts, batch_size=2)
    one_by_one = np.vstack([classifier.probabilities_of_clean([t])[0] for t in texts])
    assert np.allclose(together, one_by_one, atol=1e-5)


def test_predict_applies_the_card_normaliser(trained_tiny_bert) -> None:
    classifier = Classifier.load(trained_tiny_bert)
    raw = classifier.predict(["@someone I LOVE it http://t.co/x"], top_k=3)[0]
    clean, _ = classifier.probabilities_of_clean(["i love it"])
    assert np.isclose(raw.scores[raw.labels.index(classifier.labels[0])], clean[0][0], atol=1e-6)


def test_top_k_is_clamped_to_the_label_count(trained_tiny_bert) -> None:
    classifier = Classifier.load(trained_tiny_bert)
    assert len(classifier.predict(["ok"], top_k=10)[0].labels) == 3
    assert len(classifier.predict(["ok"], top_k=0)[0].labels) == 1
