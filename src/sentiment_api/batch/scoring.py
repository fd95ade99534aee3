"""One chunk of rows in, the same rows out with label, score, per-label scores and a skip reason.

Scoring itself is one call, :data:`ScoreChunk`: normalised texts in, probabilities out. The runner on
one machine and the Ray actors both build a :class:`ChunkScorer` around one, so they give the same
rows; :func:`stream_scorer` runs the call on parallel streams (one ONNX Runtime session per core,
as the server does) instead of one session.

Rows that cannot be scored (no text, only blanks, longer than the limit) never stop a run: they are
kept with empty prediction columns and the reason in the reason column.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from sentiment_api.core.errors import DataError
from sentiment_api.core.extras import require

if TYPE_CHECKING:
    import pyarrow as pa

    from sentiment_api.core.engine import Classifier

MISSING_TEXT = "missing text"
EMPTY_TEXT = "empty text"


def too_long(limit: int) -> str:
    """The skip reason of a text over ``limit`` characters."""
    return f"over {limit} characters"


class Scores(NamedTuple):
    """Label probabilities of each text (rows in input order) and whether each text was cut."""

    probabilities: np.ndarray
    truncated: Sequence[bool]


ScoreChunk = Callable[[Sequence[str]], Scores]
"""Normalised texts in, :class:`Scores` out: the whole of a chunk's inference."""


def classifier_scorer(classifier: Classifier, batch_size: int = 1) -> ScoreChunk:
    """Score on ``classifier``'s own session, ``batch_size`` texts per inference call."""

    def score(texts: Sequence[str]) -> Scores:
        probabilities, encoded = classifier.probabilities(texts, batch_size)
        return Scores(probabilities, encoded.truncated)

    return score


def stream_scorer(classifier: Classifier, streams: int, threads: int, batch_size: int) -> ScoreChunk:
    """Score each chunk on ``streams`` sessions at once, ``threads`` each: the chunk is cut into as
    many slices, one per session, as the server runs its batches. With a batch-invariant model
    (every package's ``rowwise`` int8 scheme) the scores are the ones a single session gives. A
    PyTorch checkpoint scores on its own session, with its own threads."""
    from sentiment_api.core.engine import OnnxBackend

    if not isinstance(classifier.backend, OnnxBackend):
        return classifier_scorer(classifier, batch_size)
    # the loaded session is the first stream when it has the threads one needs
    reuse = classifier.backend.threads == threads
    sessions = [classifier] * reuse + [
        classifier.with_threads(threads, spin=False) for _ in range(streams - reuse)
    ]
    if streams <= 1:
        return classifier_scorer(sessions[0], batch_size)
    pool = ThreadPoolExecutor(streams, thread_name_prefix="stream")  # ONNX Runtime releases the GIL

    def score_slice(session: Classifier, texts: Sequence[str]) -> Scores:
        if not texts:
            return Scores(np.zeros((0, len(session.labels)), dtype=np.float32), [])
        probabilities, encoded = session.probabilities(texts, batch_size)
        return Scores(probabilities, encoded.truncated)

    def score(texts: Sequence[str]) -> Scores:
        bounds = np.linspace(0, len(texts), streams + 1).astype(int)
        slices = [texts[start:end] for start, end in pairwise(bounds)]
        parts = list(pool.map(score_slice, sessions, slices))
        return Scores(
            np.concatenate([part.probabilities for part in parts]),
            [cut for part in parts for cut in part.truncated],
        )

    return score


@dataclass(frozen=True)
class OutputColumns:
    """The names of the columns batch prediction adds, in order."""

    labels: tuple[str, ...]
    prefix: str = ""
    min_score: float | None = None  # set: an abstained column after the scores

    @property
    def label(self) -> str:
        """The best label."""
        return f"{self.prefix}label"

    @property
    def score(self) -> str:
        """The best label's probability."""
        return f"{self.prefix}score"

    @property
    def truncated(self) -> str:
        """Whether the text was cut to the model's maximum length."""
        return f"{self.prefix}truncated"

    @property
    def reason(self) -> str:
        """Why the row was not scored (empty when it was)."""
        return f"{self.prefix}skip_reason"

    def of(self, label: str) -> str:
        """The probability column of one label."""
        return f"{self.prefix}score_{label}"

    @property
    def abstained(self) -> str:
        """Whether the best score is below ``min_score`` (only with one)."""
        return f"{self.prefix}abstained"

    @property
    def names(self) -> list[str]:
        """Every added column, in the order they are added."""
        abstained = [] if self.min_score is None else [self.abstained]
        return [self.label, self.score, self.truncated, *map(self.of, self.labels), *abstained, self.reason]

    def output_schema(self, schema: pa.Schema) -> pa.Schema:
        """``schema`` (without its metadata) followed by these columns and their types."""
        require("pyarrow")
        import pyarrow as pa

        added = [
            pa.field(self.label, pa.string()),
            pa.field(self.score, pa.float64()),
            pa.field(self.truncated, pa.bool_()),
            *(pa.field(self.of(label), pa.float64()) for label in self.labels),
            *([] if self.min_score is None else [pa.field(self.abstained, pa.bool_())]),
            pa.field(self.reason, pa.string()),
        ]
        return pa.schema([*schema.remove_metadata(), *added])

    def check_free(self, columns: Sequence[str], where: object) -> None:
        """Raise a :class:`DataError` if the input already has a column of one of these names."""
        taken = [name for name in self.names if name in columns]
        if taken:
            raise DataError(
                f"{where}: already has column(s) {', '.join(map(repr, taken))}, which prediction adds; "
                "pass --column-prefix (e.g. pred_) to name them apart"
            )


class ChunkScorer:
    """Mark bad rows, normalise and score the rest, add the prediction columns."""

    def __init__(
        self,
        columns: OutputColumns,
        text_column: str,
        normalise: Callable[[Sequence[str]], list[str]],
        score: ScoreChunk,
        max_text_chars: int,
    ) -> None:
        self.columns = columns
        self.text_column = text_column
        self.normalise = normalise
        self.score = score
        self.max_text_chars = max_text_chars

    @classmethod
    def of_classifier(
        cls,
        classifier: Classifier,
        text_column: str,
        *,
        batch_size: int = 1,
        max_text_chars: int = 1000,
        prefix: str = "",
        score: ScoreChunk | None = None,
        min_score: float | None = None,
    ) -> ChunkScorer:
        """Score with ``classifier``'s labels and normaliser (and its session unless ``score`` is given)."""
        return cls(
            OutputColumns(tuple(classifier.labels), prefix, min_score),
            text_column,
            classifier.normalise,
            score or classifier_scorer(classifier, batch_size),
            max_text_chars,
        )

    def reason(self, text: str | None) -> str | None:
        """Why ``text`` cannot be scored, or None if it can."""
        if text is None:
            return MISSING_TEXT
        if not text.strip():
            return EMPTY_TEXT
        if len(text) > self.max_text_chars:
            return too_long(self.max_text_chars)
        return None

    def __call__(self, table: pa.Table) -> pa.Table:
        """``table`` with the prediction columns added, rows in the same order."""
        require("pyarrow")
        import pyarrow as pa

        texts = _texts(table, self.text_column)
        reasons = [self.reason(text) for text in texts]
        good = [i for i, reason in enumerate(reasons) if reason is None]
        labels = self.columns.labels
        probabilities = np.zeros((len(texts), len(labels)), dtype=np.float64)
        truncated = np.zeros(len(texts), dtype=bool)
        if good:
            scores = self.score(self.normalise([texts[i] for i in good]))  # type: ignore[misc]
            probabilities[good] = scores.probabilities
            truncated[good] = np.asarray(scores.truncated, dtype=bool)
        bad = np.array([reason is not None for reason in reasons], dtype=bool)
        best = probabilities.argmax(axis=1)
        rounded = probabilities.round(6)  # six digits: what a reader can use, and stable across runs
        added = [
            pa.array([labels[j] for j in best], pa.string(), mask=bad),
            pa.array(rounded[np.arange(len(best)), best], pa.float64(), mask=bad),
            pa.array(truncated, pa.bool_(), mask=bad),
            *(pa.array(rounded[:, j], pa.float64(), mask=bad) for j in range(len(labels))),
        ]
        if self.columns.min_score is not None:
            below = probabilities[np.arange(len(best)), best] < self.columns.min_score
            added.append(pa.array(below, pa.bool_(), mask=bad))
        added.append(pa.array(reasons, pa.string()))
        # the input's schema metadata (pandas' index, for one) would describe the wrong columns
        table = table.replace_schema_metadata(None)
        return pa.Table.from_arrays(
            [*table.columns, *added], names=[*table.column_names, *self.columns.names]
        )

    def output_schema(self, schema: pa.Schema) -> pa.Schema:
        """The schema of the tables this returns for input tables of ``schema``."""
        return self.columns.output_schema(schema)


def _texts(table: pa.Table, column: str) -> list[str | None]:
    """The text column as Python strings; numbers become their digits, anything else is an error."""
    require("pyarrow")
    import pyarrow as pa

    values = table.column(column)
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        try:
            values = values.cast(pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise DataError(f"column {column!r} holds {values.type}, not text") from exc
    return list(values.to_pylist())
