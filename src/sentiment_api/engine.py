"""Load a model directory and classify batches of tweets.

One :class:`Classifier` does the work common to every runtime (normalise, tokenise, bucket by length,
softmax); a small backend runs the network itself. The PyTorch backend needs the ``train`` extra; the
ONNX Runtime backend needs neither torch nor transformers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .errors import ModelError
from .extras import require
from .model_card import ModelCard
from .text import get_normaliser
from .tokenization import Encoded, TweetTokenizer, length_buckets

ONNX_FILE = "model.onnx"


def load_card(directory: Path) -> ModelCard:
    """The card of a model directory; for a package (one with ``model.onnx``), only once the ONNX
    file is checked to be the one the card describes (its sha256)."""
    card = ModelCard.load(directory)
    if (Path(directory) / ONNX_FILE).is_file():
        card.verify_package(directory)
    return card


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
    return np.asarray(exp / exp.sum(axis=1, keepdims=True))


class TorchBackend:
    """A ``transformers`` sequence classifier in PyTorch, in inference mode."""

    def __init__(self, model: Any, threads: int | None = None) -> None:
        require("torch")
        import torch

        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self.model = model.eval()

    @classmethod
    def load(cls, directory: Path, threads: int | None = None) -> TorchBackend:
        """Load the PyTorch checkpoint in ``directory``."""
        require("torch")
        transformers: Any = require("transformers")
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
        return np.asarray(output.logits.float().numpy())


class OnnxBackend:
    """An ONNX Runtime session on the CPU, with its options set deliberately.

    - ``intra_op_num_threads``: the cores this process may use (default: all); one inter-op thread
      and sequential execution, since a transformer graph is one chain of large ops.
    - full graph optimisation, so ONNX Runtime's own fusions run on top of the exported graph.
    - the CPU memory arena on, memory patterns off: patterns only pay for fixed shapes, and length
      bucketing makes every batch a new shape.
    - ``spin``: worker threads spin between ops, which shortens latency at the cost of CPU while
      idle; a server that shares cores with other work can turn it off.
    """

    def __init__(self, path: Path, threads: int | None = None, spin: bool = True) -> None:
        import os

        ort: Any = require("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_cpu_mem_arena = True
        options.enable_mem_pattern = False
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        self.path = Path(path)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"{path}: cannot load the ONNX model: {exc}") from exc
        self.input_names = {node.name for node in self.session.get_inputs()}

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        return np.asarray(self.session.run(None, feeds)[0], dtype=np.float32)


class Classifier:
    """Normalise, tokenise, run a backend in length-bucketed batches, and turn logits into scores."""

    def __init__(self, backend: Backend, tokenizer: TweetTokenizer, card: ModelCard) -> None:
        self.backend = backend
        self.tokenizer = tokenizer
        self.card = card
        self.labels = list(card.labels)
        self.normalise = get_normaliser(card.normaliser)

    @classmethod
    def load(cls, directory: Path, threads: int | None = None, spin: bool = True) -> Classifier:
        """Load a model directory: its card, its tokenizer and the runtime its files call for.

        A package with ``model.onnx`` runs on ONNX Runtime (no torch needed); a training
        checkpoint runs on PyTorch.
        """
        directory = Path(directory)
        card = load_card(directory)
        tokenizer = TweetTokenizer.from_file(directory, card.max_length, card.pad_token_id)
        onnx_file = directory / ONNX_FILE
        backend: Backend
        if onnx_file.is_file():
            backend = OnnxBackend(onnx_file, threads, spin)
        else:
            backend = TorchBackend.load(directory, threads)
        return cls(backend, tokenizer, card)

    def with_threads(self, threads: int, spin: bool = True) -> Classifier:
        """The same ONNX model in a session of its own with ``threads`` threads (same tokenizer, card)."""
        if not isinstance(self.backend, OnnxBackend):
            raise ModelError("only an ONNX package can run in another session")
        return Classifier(OnnxBackend(self.backend.path, threads, spin), self.tokenizer, self.card)

    def probabilities_of_clean(
        self, texts: Sequence[str], batch_size: int = 64
    ) -> tuple[np.ndarray, Encoded]:
        """Label probabilities for texts that are already normalised, in input order."""
        encoded = self.tokenizer.encode(texts)
        return self.probabilities_of_ids(encoded.ids, batch_size), encoded

    def probabilities_of_ids(
        self,
        ids: Sequence[Sequence[int]],
        batch_size: int = 64,
        on_rows: Callable[[np.ndarray, np.ndarray], None] | None = None,
    ) -> np.ndarray:
        """Label probabilities for texts already tokenised (the server counts tokens before batching).

        ``on_rows(indices, probabilities)``, when given, hears of each length bucket as soon as it is
        done, shortest first, so a server can answer those texts before the rest of the batch.
        """
        probabilities = np.zeros((len(ids), len(self.labels)), dtype=np.float32)
        lengths = np.fromiter((len(row) for row in ids), dtype=np.int64, count=len(ids))
        for batch in length_buckets(lengths, batch_size):
            input_ids, attention_mask = self.tokenizer.pad([ids[i] for i in batch])
            probabilities[batch] = softmax(self.backend.logits(input_ids, attention_mask))
            if on_rows is not None:
                on_rows(batch, probabilities[batch])
        return probabilities

    def predict(self, texts: Sequence[str], batch_size: int = 64, top_k: int = 1) -> list[Prediction]:
        """Normalise raw texts and return the ``top_k`` labels of each, best first."""
        clean = [self.normalise(text) for text in texts]
        probabilities, encoded = self.probabilities_of_clean(clean, batch_size)
        return self.rank(probabilities, encoded.truncated, top_k)

    def rank(self, probabilities: np.ndarray, truncated: Sequence[bool], top_k: int = 1) -> list[Prediction]:
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
