"""Extra labelled corpora a model learns from besides the user's own tweets.

A corpus is a labelled file (a public tweet-sentiment corpus, say) whose labels are mapped onto the
target labels. It is read with the same normaliser as the target data, exact duplicates and rows
left empty by the normaliser are dropped, and it gets a validation split: its own file when there
is one, else a stratified hold-out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sentiment_api.core.errors import DataError
from sentiment_api.core.extras import require
from sentiment_api.core.files import file_sha256
from sentiment_api.core.metrics import Scores
from sentiment_api.core.records import CorpusRecord, CorpusSpec
from sentiment_api.core.text import get_normaliser
from sentiment_api.data.tweets import LABEL, TEXT, read_table, require_column

if TYPE_CHECKING:
    import pandas as pd

    from sentiment_api.core.engine import Classifier


class CorpusOptions(BaseModel):
    """Extra corpora as the command line names them: one :class:`CorpusSpec` per ``--corpus``."""

    model_config = ConfigDict(extra="forbid")

    corpus: list[Path] = Field(
        default_factory=list, description="An extra labelled corpus to learn from (.csv or .xlsx)."
    )
    corpus_validation: list[Path] = Field(
        default_factory=list,
        description="The validation file of each --corpus, in the same order (default: a stratified "
        "share of the corpus is held out).",
    )
    corpus_text_column: str = Field("text", description="Column holding the text in every corpus.")
    corpus_label_column: str = Field("label", description="Column holding the label in every corpus.")
    corpus_label: dict[str, str] = Field(
        default_factory=dict,
        description="CORPUS LABEL=TARGET LABEL: how a corpus label maps onto the target labels "
        "(e.g. 'negative=Negative emotion'); labels spelt like a target label need none.",
    )
    corpus_drop_label: list[str] = Field(
        default_factory=list, description="A corpus label whose rows are left out."
    )

    @model_validator(mode="after")
    def _paired(self) -> CorpusOptions:
        if len(self.corpus_validation) > len(self.corpus):
            raise ValueError("more --corpus-validation files than --corpus files")
        return self

    def specs(self) -> list[CorpusSpec]:
        """One spec per corpus, with its validation file when one was given."""
        validation: list[Path | None] = [*self.corpus_validation]
        validation += [None] * (len(self.corpus) - len(validation))
        return [
            CorpusSpec(
                path=path,
                validation=checked,
                text_column=self.corpus_text_column,
                label_column=self.corpus_label_column,
                label_map=self.corpus_label,
                drop_labels=self.corpus_drop_label,
            )
            for path, checked in zip(self.corpus, validation, strict=True)
        ]


@dataclass
class Corpus:
    """A corpus read and cleaned: ``text`` and ``label`` (a target label) for training and validation."""

    spec: CorpusSpec
    train: pd.DataFrame
    validation: pd.DataFrame
    sha256: str
    validation_sha256: str | None
    dropped: dict[str, int] = field(default_factory=dict)

    def record(self, epochs: int) -> CorpusRecord:
        """The card's record of this corpus, learnt from for ``epochs`` in a first stage (metrics are
        added once the model is trained)."""
        return CorpusRecord(
            name=self.spec.display_name,
            file=self.spec.path.name,
            sha256=self.sha256,
            validation_file=self.spec.validation.name if self.spec.validation else None,
            validation_sha256=self.validation_sha256,
            rows=len(self.train),
            validation_rows=len(self.validation),
            label_map=self.spec.label_map,
            dropped=self.dropped,
            epochs=epochs,
        )


def read_labelled(
    path: Path, spec: CorpusSpec, target_labels: list[str], normaliser: str, dropped: dict[str, int]
) -> pd.DataFrame:
    """``text`` (normalised) and ``label`` (mapped onto ``target_labels``) of one labelled file."""
    require("pandas")
    import pandas as pd

    path = Path(path)
    frame = read_table(path, spec.sheet)
    for column in (spec.text_column, spec.label_column):
        require_column(frame, column, path)
    frame = frame[frame[spec.text_column].notna() & frame[spec.label_column].notna()]
    labels = frame[spec.label_column].astype(str).str.strip()
    keep = ~labels.isin(spec.drop_labels)
    _count(dropped, "dropped labels", int((~keep).sum()))
    labels = labels[keep]
    mapped = labels.map(lambda label: spec.label_map.get(label, label))
    unknown = mapped[~mapped.isin(target_labels)]
    if len(unknown):
        label = labels[unknown.index[0]]
        row = int(unknown.index[0]) + 2
        raise DataError(
            f"{path}: label {label!r} (row {row}, column {spec.label_column!r}) maps onto no target label "
            f"{target_labels}; map it with --corpus-label '{label}=TARGET LABEL' or drop it with "
            f"--corpus-drop-label '{label}'"
        )
    normalise = get_normaliser(normaliser)
    rows = pd.DataFrame(
        {TEXT: [normalise(str(text)) for text in frame.loc[labels.index, spec.text_column]], LABEL: mapped}
    )
    empty = rows[TEXT].str.len() == 0
    _count(dropped, "empty after normalising", int(empty.sum()))
    rows = rows[~empty]
    before = len(rows)
    rows = rows.drop_duplicates(TEXT, keep="first")
    _count(dropped, "exact duplicates", before - len(rows))
    return rows.reset_index(drop=True)


def load_corpus(spec: CorpusSpec, target_labels: list[str], normaliser: str, seed: int = 0) -> Corpus:
    """Read, normalise, map and de-duplicate a corpus; take its validation file or hold a share out."""
    dropped: dict[str, int] = {}
    train = read_labelled(spec.path, spec, target_labels, normaliser, dropped)
    validation_sha256 = None
    if spec.validation is not None:
        validation = read_labelled(spec.validation, spec, target_labels, normaliser, {})
        validation_sha256 = file_sha256(Path(spec.validation))
        before = len(train)
        train = train[~train[TEXT].isin(set(validation[TEXT]))].reset_index(drop=True)
        _count(dropped, "also in validation", before - len(train))
    else:
        require("sklearn.model_selection")
        from sklearn.model_selection import train_test_split

        try:
            share = max(round(spec.holdout * len(train)), train[LABEL].nunique())  # a row of each at least
            train, validation = train_test_split(
                train, test_size=share, random_state=seed, stratify=train[LABEL]
            )
        except ValueError as exc:
            raise DataError(f"{spec.path}: cannot hold out a validation share: {exc}") from exc
        train, validation = train.reset_index(drop=True), validation.reset_index(drop=True)
    if spec.max_rows is not None and len(train) > spec.max_rows:
        train = train.sample(n=spec.max_rows, random_state=seed).reset_index(drop=True)
    return Corpus(spec, train, validation, file_sha256(Path(spec.path)), validation_sha256, dropped)


def score_on_file(classifier: Classifier, spec: CorpusSpec) -> Scores:
    """A model's scores on every row of one labelled file, its labels mapped onto the model's."""
    from sentiment_api.core.metrics import score_probabilities

    frame = read_labelled(spec.path, spec, classifier.labels, classifier.card.normaliser, {})
    probabilities, _ = classifier.probabilities(frame[TEXT].tolist())
    scores = score_probabilities(frame[LABEL].tolist(), probabilities, classifier.labels)
    return scores.model_copy(update={"split": "all", "data_sha256": file_sha256(Path(spec.path))})


def _count(dropped: dict[str, int], reason: str, count: int) -> None:
    if count:
        dropped[reason] = dropped.get(reason, 0) + count
