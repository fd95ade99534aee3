"""``predict``: score files with a model, on this machine's streams or on Ray Data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sentiment_api.batch.options import PredictOptions, RayOptions
from sentiment_api.batch.runner import BatchReport


def predict(
    model: Path,
    inputs: str,
    output: Path,
    options: PredictOptions,
    ray_options: RayOptions | None = None,
    *,
    log: Callable[[str], None] = print,
) -> BatchReport:
    """Score every row of ``inputs`` (a file, a directory or a glob) with ``model`` into ``output``.

    On this machine a package's chunks are scored on ``options.stream_layout()`` ONNX Runtime
    sessions at once, as the server runs its batches (a GPU, or a PyTorch checkpoint, runs whole
    chunks itself); with ``ray_options`` enabled, on Ray Data actors instead, with the same output.
    """
    if ray_options is not None and ray_options.enabled:
        from sentiment_api.batch.ray_data import predict_on_ray

        return predict_on_ray(model, inputs, output, options, ray_options)
    from sentiment_api.batch.runner import predict_files
    from sentiment_api.batch.scoring import stream_scorer
    from sentiment_api.core.engine import ONNX_FILE, Classifier

    streams, threads = options.stream_layout()
    # a package's session is the first stream; a PyTorch checkpoint keeps every thread asked for.
    # Spinning threads buy latency with idle CPU; a batch job wants throughput, and loses it to
    # spinning when other work shares the cores.
    package = (Path(model) / ONNX_FILE).is_file()
    classifier = Classifier.load(
        model, threads=threads if package else options.threads, spin=False, device=options.device
    )
    score = (
        stream_scorer(classifier, streams, threads, options.batch_size)
        if classifier.device == "cpu"
        else None
    )
    return predict_files(classifier, inputs, output, options, score=score, log=log)
