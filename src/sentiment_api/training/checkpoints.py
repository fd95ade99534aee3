"""Checkpoints of a run in progress, so that hours of training survive an interruption.

A run saves everything its next step depends on (weights, optimiser and schedule, every random
generator, the current epoch's batches and where it is in them, the epochs' history and the weights
it keeps) every ``every`` steps and at the end of each epoch, into one file replaced atomically. A
run resumed from it goes on exactly where the interrupted one was, so it ends with the weights an
uninterrupted run ends with. The file names the run it belongs to (a hash of its settings and
rows): a checkpoint of another run is refused, never silently continued.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from sentiment_api.core.errors import ConfigError
from sentiment_api.core.extras import require
from sentiment_api.core.files import staged_file

STATE_FILE = "state.pt"


@dataclass(frozen=True)
class Checkpoints:
    """Where a run keeps its checkpoint, how often, whether to resume one found there, and which
    run it is (``identity``, filled in by the run itself: see :meth:`of_run`)."""

    directory: Path
    every: int = 200
    resume: bool = False
    identity: str = ""

    def of_run(self, *facts: Any) -> Checkpoints:
        """These checkpoints for the run that ``facts`` (settings, rows: anything JSON) describe."""
        text = json.dumps(facts, sort_keys=True, default=str)
        return replace(self, identity=hashlib.sha256(text.encode()).hexdigest())

    def beside(self, directory: Path) -> Checkpoints:
        """The same policy for another run, kept in ``directory``."""
        return replace(self, directory=Path(directory), identity="")

    @property
    def path(self) -> Path:
        """The checkpoint file."""
        return Path(self.directory) / STATE_FILE

    def load(self) -> dict[str, Any] | None:
        """The checkpoint to resume from, or None to start afresh; a checkpoint that is not to be
        resumed, or belongs to another run, is a :class:`ConfigError` saying what to do."""
        if not self.path.is_file():
            return None
        if not self.resume:
            raise ConfigError(
                f"{self.directory} holds a checkpoint of an unfinished run: pass --resume to continue "
                "it, or remove the directory to start again"
            )
        torch: Any = require("torch")
        state: dict[str, Any] = torch.load(self.path, weights_only=False)
        if state.get("identity") != self.identity:
            raise ConfigError(
                f"{self.directory}: its checkpoint is of a run with other settings or data; resume with "
                "the same command, or remove the directory to start again"
            )
        return state

    def save(self, state: dict[str, Any]) -> None:
        """Replace the checkpoint with ``state`` (and the identity), atomically."""
        torch: Any = require("torch")
        with staged_file(self.path) as staging:
            torch.save({**state, "identity": self.identity}, staging)

    def clear(self) -> None:
        """Forget the checkpoint once the run is saved."""
        self.path.unlink(missing_ok=True)
        if Path(self.directory).is_dir() and not any(Path(self.directory).iterdir()):
            Path(self.directory).rmdir()


def random_state(rng: np.random.Generator) -> dict[str, Any]:
    """Every random generator a step draws from: the batches' (``rng``), NumPy's, Python's, torch's."""
    torch: Any = require("torch")
    return {
        "batches": rng.bit_generator.state,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
    }


def restore_random_state(rng: np.random.Generator, state: dict[str, Any]) -> None:
    """Put every generator back where :func:`random_state` found it."""
    torch: Any = require("torch")
    rng.bit_generator.state = state["batches"]
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
