"""One served model: load and warm it in the background, batch its requests, know whether it is ready.

:class:`~sentiment_api.serving.service.SentimentService` holds one of these per named package; the
HTTP layer never touches a classifier or a batcher itself.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sentiment_api.core.devices import SpinMode
from sentiment_api.core.engine import Classifier, Prediction
from sentiment_api.core.errors import DeadlineExceededError, ModelError, NotReadyError, QueueFullError
from sentiment_api.core.explanations import WordWeight, attributions, variants
from sentiment_api.core.settings import InferencePlan, Settings
from sentiment_api.core.tokenization import Encoded
from sentiment_api.serving.batching import BatchLimits, BatchResult, MicroBatcher, OnRows
from sentiment_api.serving.observability import ModelMetrics

log = logging.getLogger("sentiment_api.serving")
# ONNX Runtime's threads spin between the ops of a run and sleep once it returns: a lone request is
# not slowed by waking threads at every op, and an idle server burns nothing
SPIN: SpinMode = "while_running"


async def settle() -> None:
    """Give the event loop three turns: enough for a request whose bytes already wait on its socket
    to be read (turn one polls the sockets, after this task's turn), become a task (turn two) and
    reach the request log, which counts it as under way (turn three). A lone request asks this
    before it runs on the loop itself; about 15 µs."""
    for _ in range(3):
        await asyncio.sleep(0)


class State(enum.StrEnum):
    """Where a model (and the service) is in its life."""

    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"
    FAILED = "failed"


@dataclass(frozen=True)
class Outcome:
    """One request's predictions, in input order, and what they waited for."""

    predictions: list[Prediction]
    batch: BatchResult
    model: str  # the name the model is served under
    version: str  # the version that answered
    logits: np.ndarray  # one row per text, in the model's label order (before calibration)
    probabilities: np.ndarray  # the same rows, calibrated: what the scores are
    labels: list[str]  # the columns of both, the model's label order
    explanations: list[list[WordWeight]] | None = None  # per text, when asked for


def model_version(classifier: Classifier) -> str:
    """``name-variant-hash``: what changes whenever the served weights change."""
    card = classifier.card
    digest = card.package.sha256[:12] if card.package is not None else card.created_at
    return f"{card.name}-{card.variant}-{digest}"


class ServedModel:
    """One package under one name: owns its classifier and batcher, and whether it is loaded."""

    def __init__(
        self,
        name: str,
        package: Path,
        settings: Settings,
        metrics: ModelMetrics,
        classifier: Classifier | None = None,
    ) -> None:
        self.name = name
        self.package = package
        self.settings = settings
        self.plan: InferencePlan | None = None  # the settings on the device the model landed on
        self.metrics = metrics
        self.classifier = classifier
        self.solo: Classifier | None = None  # the same model with every core, for lone batches
        self.batcher: MicroBatcher | None = None
        self.state = State.LOADING
        self.version: str | None = None
        self.error: str | None = None  # why the load failed, in one line
        self._loading: asyncio.Task[None] | None = None
        self._tokenisers: ThreadPoolExecutor | None = None
        self._active = 0  # requests that chose this version and have not been answered yet
        self._idle = asyncio.Event()
        self._idle.set()

    def start(self) -> None:
        """Load and warm the model in the background; it turns ready when done."""
        self._loading = asyncio.get_running_loop().create_task(self.load(), name=f"load-{self.name}")

    async def stop(self) -> None:
        """Finish queued work and stop the inference threads."""
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
        if self.batcher is not None:
            await self.batcher.stop()
        if self._tokenisers is not None:
            self._tokenisers.shutdown(wait=False, cancel_futures=True)

    async def retire(self, successor: ServedModel) -> None:
        """Stop once every request that chose this version has been answered (``successor`` took its
        place for the ones after)."""
        await self._idle.wait()
        await self.stop()
        if self.version not in (None, successor.version) and self.classifier is not None:
            assert self.version is not None
            self.metrics.forget_model(self.version, self.classifier.card.variant)

    async def load(self) -> None:
        """Load, warm and start batching; the state is READY after, or FAILED with :attr:`error`."""
        settings = self.settings
        try:
            if self.classifier is None:
                self.classifier = await asyncio.to_thread(self._load_classifier)
            # batch sizes and threads for the device the model landed on (auto may have chosen)
            plan = self.plan = settings.for_device(self.classifier.device)
            if plan.tokeniser_threads:
                self._tokenisers = ThreadPoolExecutor(plan.tokeniser_threads, "tokenise")
            if plan.solo_threads:
                self.solo = await asyncio.to_thread(self._solo_session, plan.solo_threads)
            limits = BatchLimits(
                max_batch_size=plan.max_batch_size,
                max_wait_s=settings.max_wait_ms / 1000,
                token_budget=plan.token_budget,
                queue_size=settings.queue_size,
                max_queue_wait_s=settings.max_queue_wait_ms / 1000,
                queue_timeout_s=settings.queue_timeout_ms / 1000,
                streams=plan.streams,
                inline_tokens=settings.inline_max_tokens,
            )
            self.batcher = MicroBatcher(
                self._infer,
                limits,
                self.metrics.record_batch,
                self.metrics.queue_depth.set,
                self.metrics.streams_busy.set,
                solo_infer=self._infer_solo if self.solo is not None else None,
            )
            self.metrics.streams.set(limits.streams)
            self.batcher.start()
            timings = await self.batcher.run_in_workers(self._warm_up)
            self.batcher.admission.assume_speed(sum(timings) / len(timings) / limits.streams)
        except Exception as exc:
            log.exception("the model %s at %s could not be loaded", self.name, self.package)
            self.error = " ".join(str(exc).split()) or type(exc).__name__
            self.state = State.FAILED
            if self.batcher is not None:
                await self.batcher.stop()
            return
        self.version = model_version(self.classifier)
        card = self.classifier.card
        self.metrics.record_model(self.version, card.variant, card.label_shares)
        self.state = State.READY
        device = self.classifier.device
        log.info(
            "model %s (%s) ready on %s",
            self.name,
            self.version,
            device,
            extra={"fields": {"model": self.name, "model_version": self.version, "device": device}},
        )

    async def _until_loaded(self, deadline: float) -> None:
        if self.state is State.READY:
            return
        loading = self._loading
        if loading is not None and not loading.done():
            await asyncio.wait({loading}, timeout=max(0.0, deadline - time.monotonic()))
        if loading is None or not loading.done() or self.state is State.FAILED:
            raise NotReadyError(f"the model {self.name!r} is not loaded yet; retry shortly", retry_after=1.0)

    def _load_classifier(self) -> Classifier:
        settings = self.settings
        return Classifier.load(
            self.package,
            settings.load_threads(),
            SPIN,
            settings.device,
            precision=settings.cuda_precision,
            tensorrt=settings.tensorrt,
        )

    def _solo_session(self, threads: int) -> Classifier | None:
        """The model in a session of ``threads`` threads, for a batch that runs alone; ``None`` for a
        model that cannot run in a second session (a PyTorch checkpoint): its batches use the streams."""
        assert self.classifier is not None
        try:
            return self.classifier.with_threads(threads, SPIN)
        except ModelError:
            return None

    def _encode(self, texts: list[str]) -> Encoded:
        assert self.classifier is not None
        classifier = self.classifier
        return classifier.tokenise(classifier.normalise(texts))

    def _infer(self, ids: list[Sequence[int]], on_rows: OnRows | None = None) -> np.ndarray:
        assert self.classifier is not None
        return self._rows(self.classifier, ids, on_rows)

    def _infer_solo(self, ids: list[Sequence[int]], on_rows: OnRows | None = None) -> np.ndarray:
        assert self.solo is not None
        return self._rows(self.solo, ids, on_rows)

    def _rows(self, classifier: Classifier, ids: list[Sequence[int]], on_rows: OnRows | None) -> np.ndarray:
        """Each text's logits and calibrated probabilities side by side, computed on the batch's
        thread, so the event loop only slices them."""
        assert self.plan is not None

        def both(logits: np.ndarray) -> np.ndarray:
            return np.hstack([logits, classifier.scores(logits)])

        report = None if on_rows is None else (lambda rows, logits: on_rows(rows, both(logits)))
        return both(classifier.logits(ids, self.plan.bucket_size, report))

    async def _queued(
        self,
        ids: Sequence[Sequence[int]],
        deadline: float,
        disconnected: Callable[[], Awaitable[Any]] | None,
    ) -> BatchResult | None:
        """``ids`` through the queue and an inference thread; ``None`` when the client went away first."""
        assert self.batcher is not None
        try:
            future = self.batcher.enqueue(ids, deadline)
        except QueueFullError:
            self.metrics.shed.inc()
            raise
        try:
            return await self.batcher.wait(future, deadline, disconnected)
        except DeadlineExceededError:
            self.metrics.shed.inc()
            raise

    def _warm_up(self) -> float:
        """Run the shapes traffic will bring once, so the first requests do not pay for allocation;
        the seconds per text of a full batch of tweet-sized texts, the queue's first speed estimate."""
        assert self.classifier is not None and self.plan is not None
        batch = self.plan.max_batch_size
        short, typical, long = self.classifier.tokenise(
            ["warm up", "warm up " * 12, "warm up " * 512]  # 2, about 27 (a tweet's average) and 512 tokens
        ).ids
        infers = [self._infer] if self.solo is None else [self._infer, self._infer_solo]
        for size in sorted({1, min(8, batch), batch}):
            for row in (short, long):
                for infer in infers:
                    infer([row] * size)
        started = time.perf_counter()
        self._infer([typical] * batch)
        return (time.perf_counter() - started) / batch

    def card(self) -> dict[str, Any]:
        """The model card without local paths (or :class:`NotReadyError` before it is loaded)."""
        if self.classifier is None or self.version is None:
            raise NotReadyError(f"the model {self.name!r} is still loading", retry_after=1.0)
        card = self.classifier.card
        fields = {
            "name", "variant", "labels", "normaliser", "max_length", "created_at", "metrics", "package",
            "gate", "label_shares", "versions", "calibration",
        }  # fmt: skip
        info: dict[str, Any] = card.model_dump(mode="json", include=fields)
        info.update(
            model=self.name,
            model_version=self.version,
            base_model=card.base_model.rstrip("/").rsplit("/", 1)[-1],
            device=self.classifier.device,
            state=self.state.value,
        )
        return info

    def admit(self) -> None:
        """Refuse now (:class:`QueueFullError`) a request the queue could not take, before its body is
        read, parsed and tokenised: under overload, refusing must cost next to nothing."""
        if self.batcher is not None:
            try:
                self.batcher.admit(1)
            except QueueFullError:
                self.metrics.shed.inc()
                raise

    async def predict(
        self,
        texts: list[str],
        top_k: int,
        deadline: float,
        disconnected: Callable[[], Awaitable[Any]] | None = None,
        explain: bool = False,
    ) -> Outcome | None:
        """Normalise, tokenise, wait for a batch, rank; ``None`` when the client went away first.
        ``explain`` runs each text once without each of its words in the same batch, and weighs the
        words by what that changed (``explanations.py``).

        A request that arrives while the model is still loading waits for it (within its deadline)
        rather than failing: with several workers, one may still be warming up when another is ready.
        """
        self._active += 1
        self._idle.clear()
        try:
            return await self._predict(texts, top_k, deadline, disconnected, explain)
        finally:
            self._active -= 1
            if not self._active:
                self._idle.set()

    async def _predict(
        self,
        texts: list[str],
        top_k: int,
        deadline: float,
        disconnected: Callable[[], Awaitable[Any]] | None,
        explain: bool,
    ) -> Outcome | None:
        await self._until_loaded(deadline)
        assert self.classifier is not None and self.batcher is not None
        classifier = self.classifier
        batch, found = variants(texts) if explain else (texts, None)
        if self._tokenisers is None:
            encoded = self._encode(batch)
        else:  # off the event loop, so the loop keeps reading requests and answering batches meanwhile
            encoded = await asyncio.get_running_loop().run_in_executor(self._tokenisers, self._encode, batch)
        result = None
        if self.batcher.may_run_alone(encoded.ids, deadline):
            await settle()  # requests that have arrived meanwhile show themselves first
            if not self.metrics.in_company():
                result = self.batcher.run_alone(encoded.ids, deadline)
        if result is None:
            result = await self._queued(encoded.ids, deadline, disconnected)
        if result is None:
            return None
        count, width = len(texts), len(classifier.labels)
        logits, probabilities = result.rows[:, :width], result.rows[:, width:]
        truncated = encoded.truncated[:count]
        predictions = classifier.rank(probabilities[:count], truncated, top_k)
        assert self.version is not None
        self.metrics.queue_wait.observe(result.queue_seconds)
        self.metrics.record_texts(
            (len(ids) for ids in encoded.ids[:count]),
            truncated,
            [p.label for p in predictions],
            [p.score for p in predictions],
        )
        explanations = None
        if found is not None:
            explanations = attributions(probabilities, found)
            self.metrics.explained_words.inc(len(batch) - count)
        return Outcome(
            predictions,
            result,
            self.name,
            self.version,
            logits[:count],
            probabilities[:count],
            classifier.labels,
            explanations,
        )
