"""Extra tweets labelled by the teachers: a public corpus in the target's label space.

A corpus' own labels only approximate ours (TweetEval says negative / neutral / positive about
anything, we say the emotion toward a brand or product); a teacher trained on our labels says what
they would be. Each tweet of the file is normalised as the target's, and the teachers' mean
probabilities become its soft target, their best label its hard one.

Labelling 45,615 tweets with a base-size teacher takes most of an hour on two cores, so the result
is cached by everything it depends on (the teachers' weights, the file, the normaliser, the labels,
the rows drawn) and built in blocks, each saved as it is done: an interrupted run resumes at the
next block, and a second run with the same inputs reads the cache.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sentiment_api.core.errors import ConfigError
from sentiment_api.core.extras import require
from sentiment_api.core.files import cache_dir, file_sha256, staged_file
from sentiment_api.core.model_card import ModelCard
from sentiment_api.core.records import CorpusRecord
from sentiment_api.core.text import get_normaliser
from sentiment_api.data.tweets import LABEL, TEXT, read_table, require_column
from sentiment_api.training.distillation import load_teachers, soft_columns, teacher_probabilities

if TYPE_CHECKING:
    import pandas as pd

    from sentiment_api.core.engine import Classifier

BLOCK_ROWS = 2048  # rows labelled between two saves


def teacher_identity(teacher: str) -> str:
    """A teacher by its weights: the package's ONNX hash, else the checkpoint's weights file's."""
    directory = Path(teacher)
    card = ModelCard.load(directory)
    if card.package is not None and card.package.sha256:
        return card.package.sha256
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (directory / name).is_file():
            return file_sha256(directory / name)
    raise ConfigError(
        f"teacher {teacher}: no model.onnx, model.safetensors or pytorch_model.bin to distil from"
    )


def relabelled(
    path: Path,
    teachers: list[str],
    labels: list[str],
    normaliser: str,
    *,
    max_rows: int | None = None,
    seed: int = 0,
    batch_size: int = 128,
    cache: Path | None = None,
    text_column: str = TEXT,
    log: Callable[[str], None] = print,
) -> tuple[pd.DataFrame, CorpusRecord]:
    """The tweets of ``path`` (its ``text_column``; at most ``max_rows``, drawn with ``seed``) with
    the teachers' soft targets and best label, and the card's record of them."""
    require("pandas")
    import pandas as pd

    if not teachers:
        raise ConfigError("distil corpora need teachers to label them: give --teacher too")
    path = Path(path)
    frame = read_table(path)
    require_column(frame, text_column, path)
    clean = get_normaliser(normaliser)
    texts = pd.Series([clean(str(text)) for text in frame[text_column].dropna()], dtype=object)
    texts = texts[texts.str.len() > 0].drop_duplicates()
    if max_rows is not None and len(texts) > max_rows:
        texts = texts.sample(max_rows, random_state=seed)
    texts = texts.tolist()
    facts = {
        "teachers": sorted(teacher_identity(teacher) for teacher in teachers),
        "file": file_sha256(path), "column": text_column, "normaliser": normaliser, "labels": labels,
        "rows": len(texts), "max_rows": max_rows, "seed": seed,
    }  # fmt: skip
    key = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cache or cache_dir("relabelled"))
    target = folder / f"{path.stem}-{key}.parquet"
    if target.is_file():
        log(f"relabelled {path.name}: reusing {target}")
        probabilities = pd.read_parquet(target)[soft_columns(labels)].to_numpy(dtype=np.float32)
    else:
        parts = folder / f".{target.stem}.parts"
        probabilities = _label_in_blocks(texts, teachers, labels, batch_size, parts, log)
        out = pd.DataFrame({TEXT: texts})
        out[soft_columns(labels)] = probabilities
        with staged_file(target) as staging:
            out.to_parquet(staging, index=False)
        shutil.rmtree(parts, ignore_errors=True)
    rows = pd.DataFrame({TEXT: texts, LABEL: [labels[i] for i in probabilities.argmax(axis=1)]})
    rows[soft_columns(labels)] = probabilities
    record = CorpusRecord(
        name=path.resolve().parent.name or path.stem, file=path.name, sha256=str(facts["file"]),
        rows=len(rows), mode="distil", label_map={},
    )  # fmt: skip
    return rows, record


def _label_in_blocks(
    texts: list[str],
    teachers: list[str],
    labels: list[str],
    batch_size: int,
    parts: Path,
    log: Callable[[str], None],
) -> np.ndarray:
    """The teachers' probabilities of ``texts``, a block at a time, each block kept in ``parts``
    as soon as it is done (and read from there when it was done by an earlier, interrupted run)."""
    parts.mkdir(parents=True, exist_ok=True)
    loaded: list[Classifier] = []  # loaded once the first block needs labelling
    blocks = []
    for number, start in enumerate(range(0, len(texts), BLOCK_ROWS)):
        part = parts / f"{number:05d}.npy"
        if part.is_file():
            blocks.append(np.load(part))
            continue
        log(f"relabelling rows {start + 1}-{min(start + BLOCK_ROWS, len(texts))} of {len(texts)}")
        loaded = loaded or load_teachers(teachers, labels)
        block = teacher_probabilities(loaded, texts[start : start + BLOCK_ROWS], labels, batch_size)
        with staged_file(part) as staging:
            np.save(staging, block)
        blocks.append(block)
    return np.concatenate(blocks) if blocks else np.zeros((0, len(labels)), dtype=np.float32)
