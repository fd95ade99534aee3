"""The service: every served model by name, the default one, and the ready / draining state.

The HTTP layer asks this object for predictions, model cards and the state; each model's loading,
batching and ranking is its :class:`~sentiment_api.serving.served_model.ServedModel`'s.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sentiment_api.core.engine import Classifier
from sentiment_api.core.errors import ModelUpdateError, UnknownModelError
from sentiment_api.core.settings import Settings
from sentiment_api.serving.observability import Metrics
from sentiment_api.serving.served_model import Outcome, ServedModel, State, model_version
from sentiment_api.serving.shadow import Shadow
from sentiment_api.serving.updates import check_package

log = logging.getLogger("sentiment_api.serving")

__all__ = ["Outcome", "SentimentService", "State", "model_version"]


class SentimentService:
    """Holds the served models; ready once every one is loaded and warmed, until it drains."""

    def __init__(self, settings: Settings, metrics: Metrics, classifier: Classifier | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        packages = settings.packages
        self.default = settings.default_name
        self.models = {
            name: ServedModel(
                name,
                package,
                settings,
                metrics.for_model(name),
                classifier if name == self.default else None,
            )
            for name, package in packages.items()
        }
        self.shadows = {name: self._shadow(name, package) for name, package in settings.shadows.items()}
        self._draining = False
        self.history: dict[str, list[Path]] = {}  # each name's earlier packages, the latest last
        self._updating = asyncio.Lock()  # one update at a time
        self._retiring: set[asyncio.Task[None]] = set()

    @property
    def state(self) -> State:
        """Failed if any model failed to load; loading until every one is ready; then ready, or draining."""
        states = {model.state for model in self.models.values()}
        if State.FAILED in states:
            return State.FAILED
        if self._draining:
            return State.DRAINING
        return State.LOADING if State.LOADING in states else State.READY

    @property
    def ready(self) -> bool:
        """Every model loaded and warmed, and not draining: what readiness reports."""
        return self.state is State.READY

    @property
    def version(self) -> str | None:
        """The default model's version (``None`` while it loads)."""
        return self.models[self.default].version

    def model(self, name: str | None) -> ServedModel:
        """The model served as ``name`` (``None``: the default), or a 404 naming the known ones."""
        if name is None:
            return self.models[self.default]
        try:
            return self.models[name]
        except KeyError:
            known = ", ".join(sorted(self.models))
            raise UnknownModelError(f"model: no model named {name!r}; this service holds {known}") from None

    def _shadow(self, name: str, package: Path) -> Shadow:
        """A shadow of model ``name``: its package in a process of its own, on one thread that runs
        only on idle cores, so it takes next to nothing from the live path."""
        return Shadow(name, package, self.settings.shadow_share, self.metrics, self.settings.device)

    def start(self) -> None:
        """Load and warm every model in the background; readiness turns 200 when all are done (a
        shadow loads too, but readiness does not wait for it)."""
        for model in self.models.values():
            model.start()
        for shadow in self.shadows.values():
            shadow.start()

    def shadow(self, name: str) -> Shadow:
        """The shadow of model ``name`` (a 404 when it has none)."""
        self.model(name)
        if name not in self.shadows:
            raise UnknownModelError(
                f"model {name!r} has no shadow; attach one with --shadow or the admin API"
            )
        return self.shadows[name]

    async def attach_shadow(self, name: str, package: Path) -> dict[str, Any]:
        """Check, load and warm ``package`` as the shadow of ``name``, replacing any shadow it had."""
        self.model(name)
        check_package(name, package)
        shadow = self._shadow(name, package)
        await shadow.load()
        if shadow.state is State.FAILED:
            await shadow.stop()
            raise ModelUpdateError(f"shadow of {name}: {package.name} refused: {shadow.error}")
        previous = self.shadows.get(name)
        self.shadows[name] = shadow
        if previous is not None:
            await previous.stop()
        return shadow.summary()

    async def detach_shadow(self, name: str) -> dict[str, Any]:
        """Stop comparing: the shadow's summary, as it ends."""
        shadow = self.shadow(name)
        del self.shadows[name]
        await shadow.stop()
        return shadow.summary()

    async def promote_shadow(self, name: str) -> dict[str, Any]:
        """Serve the shadow's package as ``name``, through the same checks as any swap; the shadow ends."""
        shadow = self.shadow(name)
        swapped = await self.swap(name, shadow.package)
        if self.shadows.get(name) is shadow:
            del self.shadows[name]
            await shadow.stop()
        return swapped

    def drain(self) -> None:
        """Report not-ready from now on, while still serving what arrives (SIGTERM calls this)."""
        self._draining = True

    async def stop(self) -> None:
        """Finish queued work and stop every model's inference threads."""
        await asyncio.gather(
            *(model.stop() for model in self.models.values()),
            *(shadow.stop() for shadow in self.shadows.values()),
            *self._retiring,
        )

    async def swap(self, name: str, package: Path, *, rollback: bool = False) -> dict[str, Any]:
        """Serve ``package`` as ``name`` (a new name adds a model) without failing a request.

        The package is checked (card, integrity, gate), loaded and warmed while the current version
        serves; then requests switch at once, the ones that already chose the current version finish
        on it, and it is released. A package that fails a check is a :class:`ModelUpdateError` and the
        current version goes on serving. ``rollback`` marks a return to the previous version, which
        is then dropped from the history instead of the current one being added to it.
        """
        if self.settings.workers > 1:
            raise ModelUpdateError(
                "updates through the admin API need a single worker process (each worker holds its "
                "own models): replace the package directory and send the supervisor SIGHUP instead"
            )
        async with self._updating:
            check_package(name, package)
            current = self.models.get(name)
            candidate = ServedModel(name, package, self.settings, self.metrics.for_model(name))
            await candidate.load()
            if candidate.state is State.FAILED:
                keeps = f"; {current.version} keeps serving" if current is not None else ""
                raise ModelUpdateError(f"model {name}: {package.name} refused: {candidate.error}{keeps}")
            self.models[name] = candidate  # from here on, requests naming it get the new version
            if rollback:
                self.history[name].pop()
            elif current is not None:
                self.history.setdefault(name, []).append(current.package)
            if current is not None:
                task = asyncio.get_running_loop().create_task(current.retire(candidate))
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)
        previous = current.version if current is not None else None
        log.info(
            "model %s: %s now serves (was %s)",
            name,
            candidate.version,
            previous,
            extra={"fields": {"model": name, "model_version": candidate.version, "previous": previous}},
        )
        return {"model": name, "model_version": candidate.version, "previous_version": previous}

    async def rollback(self, name: str) -> dict[str, Any]:
        """Serve ``name``'s previous package again, through the same checks as :meth:`swap`."""
        self.model(name)  # a 404 for an unknown name
        earlier = self.history.get(name)
        if not earlier:
            raise ModelUpdateError(f"model {name}: no earlier version to roll back to")
        return await self.swap(name, earlier[-1], rollback=True)

    def card(self, name: str | None = None) -> dict[str, Any]:
        """A model's card without local paths (the default model's when ``name`` is None)."""
        return self.model(name).card()

    def cards(self) -> list[dict[str, Any]]:
        """Every model's card, or what is known of one still loading, the default first."""
        listed = []
        for name, model in self.models.items():
            if model.classifier is not None and model.version is not None:
                entry = model.card()
            else:
                entry = {"model": name, "state": model.state.value, "model_version": None}
            entry["default"] = name == self.default
            listed.append(entry)
        return listed

    def admit(self) -> None:
        """Refuse now, before the body is read, a request the default model's queue could not take
        (requests naming another model are checked against its queue when they enqueue)."""
        self.models[self.default].admit()

    async def predict(
        self,
        texts: list[str],
        top_k: int,
        deadline: float,
        disconnected: Callable[[], Awaitable[Any]] | None = None,
        model: str | None = None,
        explain: bool = False,
    ) -> Outcome | None:
        """The named model's predictions (the default's when ``model`` is None), explained when asked
        (``ServedModel.predict``); ``None`` when the client went away first. A model with a shadow
        offers it the same texts afterwards."""
        served = self.model(model)
        outcome = await served.predict(texts, top_k, deadline, disconnected, explain)
        shadow = self.shadows.get(served.name)
        if shadow is not None and outcome is not None and served.classifier is not None:
            queued = served.batcher.depth if served.batcher is not None else 0
            shadow.offer(texts, outcome, served.classifier.labels, queued)
        return outcome
