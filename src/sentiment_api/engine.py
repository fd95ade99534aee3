"""Load a model directory and classify batches of tweets.

One :class:`Classifier` does the work common to every runtime (normalise, tokenise, bucket by length,
softmax); a small backend runs the network itself. The PyTorch backend needs the ``train`` extra; the
ONNX Runtime backend needs neither torch nor transformers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .errors import ModelError
from .model_card import ModelCard
from .text import get_normaliser
from .tokenization import Encoded, TweetTokenizer, length_buckets


class Backend(Protocol):
    """Runs the network: token ids and mask in, one row of logits per text out."""

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Prediction:
    """The scores of every label for one text, best first, and whether the text was cut."""

    labels: list[str]
    scores: list[float]
    truncated: bool

    @property
    def label(self) -> str:
        """The best label."""
        return self.labels[0]

    @property
    def score(self) -> float:
        """The best label's probability."""
        return self.scores[0]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


class TorchBackend:
    """A ``transformers`` sequence classifier in PyTorch, in inference mode."""

    def __init__(self, model: Any, threads: int | None = None) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self.model = model.eval()

    @classmethod
    def load(cls, directory: Path, threads: int | None = None) -> TorchBackend:
        """Load the PyTorch checkpoint in ``directory``."""
        from .errors import require

        require("torch", "train")
        transformers: Any = require("transformers", "train")
        try:
            model = transformers.AutoModelForSequenceClassification.from_pretrained(directory)
        except OSError as exc:
            raise ModelError(f"{directory}: cannot load the PyTorch checkpoint: {exc}") from exc
        return cls(model, threads)

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            output = self.model(
                input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask)
            )
        return output.logits.float().numpy()


class Classifier:
    """Normalise, tokenise, run a backend in length-bucketed batches, and turn logits into scores."""

    def __init__(self, backend: Backend, tokenizer: TweetTokenizer, card: ModelCard) -> None:
        self.backend = backend
        self.tokenizer = tokenizer
        self.card = card
        self.labels = list(card.labels)
        self.normalise = get_normaliser(card.normaliser)

    @classmethod
    def load(cls, directory: Path, threads: int | None = None) -> Classifier:
        """Load a model directory: its card, its tokenizer and the runtime its files call for."""
        directory = Path(directory)
        card = ModelCard.load(directory)
        tokenizer = TweetTokenizer.from_file(directory, card.max_length, card.pad_token_id)
        return cls(TorchBackend.load(directory, threads), tokenizer, card)

    def probabilities_of_clean(
        self, texts: Sequence[str], batch_size: int = 64
    ) -> tuple[np.ndarray, Encoded]:
        """Label probabilities for texts that are already normalised, in input order."""
        encoded = self.tokenizer.encode(texts)
        probabilities = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        for batch in length_buckets(encoded.lengths(), batch_size):
            input_ids, attention_mask = self.tokenizer.pad([encoded.ids[i] for i in batch])
            probabilities[batch] = softmax(self.backend.logits(input_ids, attention_mask))
        return probabilities, encoded

    def predict(self, texts: Sequence[str], batch_size: int = 64, top_k: int = 1) -> list[Prediction]:
        """Normalise raw texts and return the ``top_k`` labels of each, best first."""
        clean = [self.normalise(text) for text in texts]
        probabilities, encoded = self.probabilities_of_clean(clean, batch_size)
        return self.rank(probabilities, encoded.truncated, top_k)

    def rank(
        self, probabilities: np.ndarray, truncated: Sequence[bool], top_k: int = 1
    ) -> list[Prediction]:
        """Turn rows of probabilities into predictions with the ``top_k`` labels, best first."""
        top_k = max(1, min(top_k, len(self.labels)))
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
        return [
            Prediction(
                labels=[self.labels[j] for j in row_order],
                scores=[float(row[j]) for j in row_order],
                truncated=cut,
            )
            for row, row_order, cut in zip(probabilities, order, truncated, strict=True)
        ]
