"""Load a model directory and classify batches of tweets.

One :class:`Classifier` does the work common to every runtime (normalise, tokenise, bucket by length,
softmax); a small backend runs the network itself, on the CPU or on an NVIDIA GPU (``devices.py``
decides which). The PyTorch backend needs the ``train`` extra; the ONNX Runtime backend needs neither
torch nor transformers, and runs on a GPU with the ``gpu`` extra (``onnxruntime-gpu``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from sentiment_api.core.calibration import softmax
from sentiment_api.core.devices import (
    CUDA_PROVIDER,
    TENSORRT_PROVIDER,
    CudaPrecision,
    Device,
    DeviceChoice,
    Runtime,
    SpinMode,
    choose_device,
    spin_mode,
    this_cpu,
)
from sentiment_api.core.errors import DeviceError, ModelError
from sentiment_api.core.explanations import WordWeight, attributions, variants
from sentiment_api.core.extras import require
from sentiment_api.core.model_card import ModelCard
from sentiment_api.core.text import get_normaliser
from sentiment_api.core.tokenization import Encoded, TweetTokenizer, length_buckets

ONNX_FILE = "model.onnx"
log = logging.getLogger("sentiment_api.core.engine")


def load_card(directory: Path) -> ModelCard:
    """The card of a model directory; for a package (one with ``model.onnx``), only once the ONNX
    file is checked to be the one the card describes (its sha256)."""
    card = ModelCard.load(directory)
    if (Path(directory) / ONNX_FILE).is_file():
        card.verify_package(directory)
    return card


def device_for(directory: Path, device: DeviceChoice, card: ModelCard | None = None) -> Device:
    """The device the model in ``directory`` would run on when ``device`` is asked for: a
    :class:`DeviceError` when it cannot. CUDA is not started, so the CLI can check before the server
    forks its workers."""
    directory = Path(directory)
    card = card or load_card(directory)
    runtime: Runtime = "onnxruntime" if (directory / ONNX_FILE).is_file() else "torch"
    return choose_device(device, card.devices(), runtime, f"{directory} ({card.variant})")


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


class TorchBackend:
    """A ``transformers`` sequence classifier in PyTorch, in inference mode.

    On ``cuda`` the weights are cast to ``precision`` (fp16 or bf16): a GPU's tensor cores multiply
    those, and a classifier's labels do not need fp32 there (the fp16 package's gate measures it).
    """

    def __init__(
        self,
        model: Any,
        threads: int | None = None,
        device: Device = "cpu",
        precision: CudaPrecision = "float16",
    ) -> None:
        require("torch")
        import torch

        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self.device = device
        if device == "cuda":
            if not torch.cuda.is_available():
                raise DeviceError(
                    f"device cuda asked for, but PyTorch {torch.__version__} cannot start CUDA here "
                    "(torch.cuda.is_available() is False: no GPU, or a driver older than its CUDA)"
                )
            model = model.to(device="cuda", dtype=getattr(torch, precision))
        self.model = model.eval()

    @classmethod
    def load(
        cls,
        directory: Path,
        threads: int | None = None,
        device: Device = "cpu",
        precision: CudaPrecision = "float16",
    ) -> TorchBackend:
        """Load the PyTorch checkpoint in ``directory``."""
        require("torch")
        transformers: Any = require("transformers")
        try:
            model = transformers.AutoModelForSequenceClassification.from_pretrained(directory)
        except OSError as exc:
            raise ModelError(f"{directory}: cannot load the PyTorch checkpoint: {exc}") from exc
        return cls(model, threads, device, precision)

    def compile(self) -> None:
        """Compile the model with ``torch.compile`` (dynamic shapes: every length bucket differs)."""
        self.model = self._torch.compile(self.model, dynamic=True)

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            output = self.model(
                input_ids=torch.from_numpy(input_ids).to(self.device),
                attention_mask=torch.from_numpy(attention_mask).to(self.device),
            )
        return np.asarray(output.logits.float().cpu().numpy())


TENSORRT_MAX_BATCH = 1024  # the largest max_batch_size the settings allow


def execution_providers(device: Device, tensorrt: bool = False, max_length: int = 512) -> list[Any]:
    """ONNX Runtime's execution providers for ``device``, tried in this order.

    On ``cuda`` the CPU provider comes last, so the odd op without a GPU kernel still runs (on the
    CPU); whether the GPU provider itself started is checked after the session is made. TensorRT
    (``tensorrt``) comes first when asked for, in fp16, with one optimisation profile covering every
    batch and length the engine can be given: without it TensorRT builds a new engine whenever a
    shape falls outside the ones seen so far, which length bucketing makes constant. Its engines are
    cached in the temporary directory, so a restart does not build them again.
    """
    if device == "cpu":
        if tensorrt:
            raise DeviceError("TensorRT runs on a GPU: set the device to cuda, or turn TensorRT off")
        return ["CPUExecutionProvider"]
    import tempfile

    providers: list[Any] = [(CUDA_PROVIDER, {"device_id": 0}), "CPUExecutionProvider"]
    if tensorrt:

        def shapes(batch: int, length: int) -> str:
            return f"input_ids:{batch}x{length},attention_mask:{batch}x{length}"

        options = {
            "trt_fp16_enable": True,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(Path(tempfile.gettempdir()) / "sentiment-api-tensorrt"),
            "trt_profile_min_shapes": shapes(1, 1),
            "trt_profile_opt_shapes": shapes(64, 64),
            "trt_profile_max_shapes": shapes(TENSORRT_MAX_BATCH, max_length),
        }
        providers.insert(0, (TENSORRT_PROVIDER, options))
    return providers


@functools.cache
def _tell_exact_int8(path: Path, products: int) -> None:
    """Log the rewrite once per model and process (a server loads its model in several sessions)."""
    log.info(
        "%s: no VNNI or AMX on this CPU (%s): %d int8 products run as uint8 x uint8, which cannot saturate",
        path,
        this_cpu().model,
        products,
    )


@functools.cache
def _shared_cpu_arena(ort: Any) -> bool:
    """One CPU memory arena for every session of this process, registered with ONNX Runtime's
    environment once: each session's own arena grows to its own peak and keeps it, so two sessions
    of a model and every model beside it each held a warm-up's worth of activations. True when
    registered (an older ONNX Runtime without the call keeps an arena per session)."""
    try:
        info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(info, ort.OrtArenaCfg({}))
    except (AttributeError, RuntimeError, TypeError) as exc:
        log.debug("no shared CPU arena: %s", exc)
        return False
    return True


class OnnxBackend:
    """An ONNX Runtime session, on the CPU or (``device="cuda"``) on an NVIDIA GPU, with its options
    set deliberately.

    - ``intra_op_num_threads``: the cores this process may use (default: all); one inter-op thread
      and sequential execution, since a transformer graph is one chain of large ops.
    - full graph optimisation, so ONNX Runtime's own fusions run on top of the exported graph.
    - the CPU memory arena on, one for every session of the process (:func:`_shared_cpu_arena`),
      memory patterns off: patterns only pay for fixed shapes, and length bucketing makes every batch
      a new shape.
    - ``spin``: whether idle worker threads spin (busy-wait) for work instead of sleeping.
      ``while_running`` (what ``True`` gave before, without the idle cost) spins between the ops of
      a run, where a sleeping thread would be woken once per op, and stops the moment the run
      returns (ONNX Runtime's ``session.force_spinning_stop``); ``always`` (``True``) keeps spinning
      between runs too, burning CPU while idle; ``never`` (``False``) always sleeps.
    - on a GPU, ONNX Runtime falls back to the CPU by itself when CUDA (or TensorRT) cannot start;
      that is refused here, one line naming the provider, since a silent fall back is 100x slower.
    - on a CPU whose uint8 x int8 products saturate (x86 without VNNI or AMX), the graph's int8
      products are loaded as uint8 x uint8 (``rowwise.exact_int8``), so that a package gives every
      CPU the answers it was gated and scored with; ``exact_int8_products`` says how many.
    """

    def __init__(
        self,
        path: Path,
        threads: int | None = None,
        spin: bool | SpinMode = True,
        device: Device = "cpu",
        tensorrt: bool = False,
        max_length: int = 512,
        exact: tuple[bytes, int] | None = None,
    ) -> None:
        import os

        ort: Any = require("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        self.threads: int = options.intra_op_num_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_cpu_mem_arena = True
        options.enable_mem_pattern = False
        if device == "cpu" and _shared_cpu_arena(ort):
            options.add_session_config_entry("session.use_env_allocators", "1")
        self.spin: SpinMode = spin_mode(spin)
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", "0" if self.spin == "never" else "1"
        )
        options.add_session_config_entry(
            "session.force_spinning_stop", "1" if self.spin == "while_running" else "0"
        )
        self.path = Path(path)
        providers = execution_providers(device, tensorrt, max_length)
        source: str | bytes = str(path)
        self.exact_int8_products = 0
        if device == "cpu" and this_cpu().saturates_int8:
            from sentiment_api.core.rowwise import exact_int8_model

            exact = exact or exact_int8_model(path)
            if exact is not None:
                source, self.exact_int8_products = exact
                _tell_exact_int8(self.path, self.exact_int8_products)
        # the rewritten model, kept for one more session of it (:meth:`sibling`), then let go
        self._exact_for_sibling = exact if device == "cpu" else None
        try:
            self.session = ort.InferenceSession(source, options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            error = DeviceError if device == "cuda" else ModelError
            raise error(f"{path}: cannot load the ONNX model: {' '.join(str(exc).split())}") from exc
        wanted = TENSORRT_PROVIDER if tensorrt else CUDA_PROVIDER
        if device == "cuda" and wanted not in self.session.get_providers():
            raise DeviceError(
                f"device cuda asked for, but ONNX Runtime could not start {wanted} (it would run on "
                f"{self.session.get_providers()[0]}): it needs the CUDA 12 and cuDNN 9 libraries"
                + (" and TensorRT 10" if tensorrt else "")
                + " (the nvidia/cuda:12.*-cudnn-runtime images have CUDA and cuDNN; deploy/gpu.Dockerfile)"
            )
        self.device = device
        self.input_names = {node.name for node in self.session.get_inputs()}

    def sibling(self, threads: int, spin: bool | SpinMode = True) -> OnnxBackend:
        """The same model in a CPU session of its own with ``threads`` threads. The first sibling
        reuses this session's int8 rewrite instead of redoing it: a second rewrite left as much
        memory behind as the session itself holds."""
        exact, self._exact_for_sibling = self._exact_for_sibling, None
        return OnnxBackend(self.path, threads, spin, exact=exact)

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        return np.asarray(self.session.run(None, feeds)[0], dtype=np.float32)


class Classifier:
    """Normalise, tokenise, run a backend in length-bucketed batches, and turn logits into scores."""

    def __init__(
        self, backend: Backend, tokenizer: TweetTokenizer, card: ModelCard, device: Device = "cpu"
    ) -> None:
        self.backend = backend
        self.device = device
        self.tokenizer = tokenizer
        self.card = card
        self.labels = list(card.labels)
        self.normaliser = get_normaliser(card.normaliser)
        # the card's calibration, applied to every logit before the softmax (1: none)
        self.temperature = card.calibration.temperature if card.calibration is not None else 1.0

    @classmethod
    def load(
        cls,
        directory: Path,
        threads: int | None = None,
        spin: bool | SpinMode = True,
        device: DeviceChoice = "cpu",
        *,
        precision: CudaPrecision = "float16",
        tensorrt: bool = False,
    ) -> Classifier:
        """Load a model directory: its card, its tokenizer and the runtime its files call for.

        A package with ``model.onnx`` runs on ONNX Runtime (no torch needed); a training
        checkpoint runs on PyTorch (in ``precision`` on a GPU). ``device`` is ``cpu``, ``cuda`` or
        ``auto`` (``devices.choose_device``); a model not for that device, or ``cuda`` where it cannot
        start, is a :class:`DeviceError`, and only ``auto`` then runs on the CPU instead.
        """
        directory = Path(directory)
        card = load_card(directory)
        tokenizer = TweetTokenizer.from_file(directory, card.max_length, card.pad_token_id)
        onnx_file = directory / ONNX_FILE
        supported = card.devices()

        def backend_on(chosen: Device) -> Backend:
            if onnx_file.is_file():
                return OnnxBackend(
                    onnx_file, threads, spin, chosen, tensorrt and chosen == "cuda", card.max_length
                )
            return TorchBackend.load(directory, threads, chosen, precision)

        chosen = device_for(directory, device, card)
        try:
            backend = backend_on(chosen)
        except DeviceError:
            if device != "auto" or chosen == "cpu" or "cpu" not in supported:
                raise
            chosen = "cpu"  # auto: a GPU that is there but does not start is no GPU
            backend = backend_on(chosen)
        return cls(backend, tokenizer, card, chosen)

    def with_threads(self, threads: int, spin: bool | SpinMode = True) -> Classifier:
        """The same ONNX model in a session of its own with ``threads`` threads (same tokenizer, card)."""
        if not isinstance(self.backend, OnnxBackend):
            raise ModelError("only an ONNX package can run in another session")
        return Classifier(self.backend.sibling(threads, spin), self.tokenizer, self.card)

    # The steps every caller composes (the server, batch scoring, training, evaluation, the gate,
    # bench): normalise -> tokenise -> infer -> rank. Each is here once; ``predict`` runs them all.

    def normalise(self, texts: Sequence[str]) -> list[str]:
        """Raw texts cleaned by the normaliser the model was trained with (its card's)."""
        return [self.normaliser(text) for text in texts]

    def tokenise(self, clean: Sequence[str]) -> Encoded:
        """Normalised texts as token ids, cut at the model's length (``truncated`` says which were)."""
        return self.tokenizer.encode(clean)

    def infer(
        self,
        ids: Sequence[Sequence[int]],
        batch_size: int = 64,
        on_rows: Callable[[np.ndarray, np.ndarray], None] | None = None,
    ) -> np.ndarray:
        """Calibrated label probabilities of tokenised texts, in input order (:meth:`logits`, then
        :meth:`scores`); ``on_rows`` hears of probabilities."""
        report = None if on_rows is None else (lambda rows, logits: on_rows(rows, self.scores(logits)))
        return self.scores(self.logits(ids, batch_size, report))

    def logits(
        self,
        ids: Sequence[Sequence[int]],
        batch_size: int = 64,
        on_rows: Callable[[np.ndarray, np.ndarray], None] | None = None,
    ) -> np.ndarray:
        """The network's logits of tokenised texts (offsets folded in, before calibration), in input
        order, run in length buckets of ``batch_size`` so that short texts are not padded to the longest.

        ``on_rows(indices, logits)``, when given, hears of each length bucket but the last as soon as
        it is done, shortest first, so a server can answer those texts before the rest of the batch;
        the last comes back with the return value anyway, and a server pays one wake-up of its event
        loop per report.
        """
        logits = np.zeros((len(ids), len(self.labels)), dtype=np.float32)
        lengths = np.fromiter((len(row) for row in ids), dtype=np.int64, count=len(ids))
        buckets = length_buckets(lengths, batch_size)
        for number, batch in enumerate(buckets, start=1):
            input_ids, attention_mask = self.tokenizer.pad([ids[i] for i in batch])
            logits[batch] = self.backend.logits(input_ids, attention_mask)
            if on_rows is not None and number < len(buckets):
                on_rows(batch, logits[batch])
        return logits

    def scores(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of rows of logits: ``softmax(logits / temperature)``."""
        return softmax(logits, self.temperature)

    def probabilities(self, clean: Sequence[str], batch_size: int = 64) -> tuple[np.ndarray, Encoded]:
        """Label probabilities of normalised texts (tokenise, then infer), with their encoding."""
        encoded = self.tokenise(clean)
        return self.infer(encoded.ids, batch_size), encoded

    def predict(self, texts: Sequence[str], batch_size: int = 64, top_k: int = 1) -> list[Prediction]:
        """Every step: normalise raw texts, tokenise, infer, and rank the ``top_k`` labels of each."""
        probabilities, encoded = self.probabilities(self.normalise(texts), batch_size)
        return self.rank(probabilities, encoded.truncated, top_k)

    def explain(self, texts: Sequence[str], batch_size: int = 64) -> list[list[WordWeight]]:
        """Each raw text's words weighted by how much removing each lowers its best label's
        probability (``explanations.py``): the texts and their variants in one run."""
        batch, found = variants(texts)
        probabilities, _ = self.probabilities(self.normalise(batch), batch_size)
        return attributions(probabilities, found)

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
