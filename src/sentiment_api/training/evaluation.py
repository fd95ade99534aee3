"""Score a trained model on a split of a labelled file, rebuilt as its card says, or on corpora."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sentiment_api.core.engine import Classifier
from sentiment_api.core.errors import ConfigError
from sentiment_api.core.files import write_text_atomic
from sentiment_api.core.metrics import Scores, plot_confusion_matrix, score_probabilities
from sentiment_api.core.records import CorpusSpec
from sentiment_api.data.corpora import score_on_file
from sentiment_api.data.tweets import LABEL, SPLITS, TEXT, load_tweets, split_tweets


def evaluate_model(
    model: Path,
    data: Path | None = None,
    split: str = "test",
    sheet: str | None = None,
    corpora: Sequence[CorpusSpec] = (),
) -> list[tuple[str, Scores]]:
    """The model's scores, named: on ``split`` of ``data`` (rebuilt as its card says), or on every
    row of each corpus file, its labels mapped onto the model's."""
    classifier = Classifier.load(model)
    if data is not None:
        return [(f"{Path(data).name} ({split})", evaluate_classifier(classifier, data, split, sheet))]
    return [(spec.path.name, score_on_file(classifier, spec)) for spec in corpora]


def write_scores(scores: Scores, folder: Path, title: str) -> None:
    """``metrics.json`` and ``confusion_matrix.png`` into ``folder``, each written atomically."""
    write_text_atomic(Path(folder) / "metrics.json", scores.model_dump_json(indent=2) + "\n")
    plot_confusion_matrix(scores, Path(folder) / "confusion_matrix.png", title)


def evaluate_classifier(
    classifier: Classifier, data_path: Path, split: str = "test", sheet: str | None = None
) -> Scores:
    """Metrics of a loaded classifier on one split of a labelled file, made as its card says.

    The split is rebuilt with the data spec recorded in the model card (same cleaning, same seed),
    so ``test`` means the very rows the model was tested on; ``all`` uses every prepared row.
    """
    if split not in (*SPLITS, "all"):
        raise ConfigError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)} or all")
    spec = classifier.card.data.spec
    if sheet is not None:
        spec = spec.model_copy(update={"sheet": sheet})
    data = load_tweets(data_path, spec)
    frame = data.frame if split == "all" else getattr(split_tweets(data, spec), split)
    unknown = sorted(set(frame[LABEL]) - set(classifier.labels))
    if unknown:
        raise ConfigError(f"{data_path}: labels {unknown} are not labels of the model")
    probabilities, _ = classifier.probabilities(frame[TEXT].tolist())
    metrics = score_probabilities(frame[LABEL].tolist(), probabilities, classifier.labels)
    return metrics.model_copy(update={"split": split, "data_sha256": data.sha256})
