"""Speed of each int8 scheme (and fp32) on one checkpoint, timed in turns in one process.

Usage: python scripts/compare_int8_speed.py CHECKPOINT DATA [--schemes hybrid static rowwise dynamic]
       [--threads 1] [--repeats 5] [--batch 32] [--openvino]

Each scheme is exported with the project's own ``export_variants`` (the static scheme calibrated on
the training split, as ``export`` does); then, repeat after repeat, every model scores the reference
test tweets in length-sorted batches of ``--batch`` and 200 of them one at a time. Taking turns
means background load hits every model alike, so the ratios hold on a shared machine even where the
absolute figures do not. Prints the CPU model and its int8 flags, and one row per model: tweets/s
batched and at batch 1 (medians), the ratio to the first scheme, and the share of test labels that
agree with the fp32 model (ONNX Runtime).

``--openvino`` also runs every model through OpenVINO's CPU plugin (``pip install openvino``; not a
project dependency), where its ONNX reader converts the graph (it has no rule for ONNX Runtime's
fused ``QAttention`` of the ``hybrid`` scheme, say): another maintained runtime, side by side.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from sentiment_api.bench import describe_machine
from sentiment_api.data import TEXT, load_splits
from sentiment_api.engine import Classifier, OnnxBackend
from sentiment_api.export import export_variants
from sentiment_api.model_card import ModelCard
from sentiment_api.tokenization import TweetTokenizer

SINGLES = 200


class OpenVinoBackend:
    """The model compiled by OpenVINO for the CPU, one stream of ``threads`` threads like ours: a
    backend for the engine's own ``Classifier``, so both runtimes are fed and timed alike."""

    def __init__(self, path: Path, threads: int) -> None:
        import openvino

        config = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
        compiled = openvino.Core().compile_model(str(path), "CPU", config)
        self.request = compiled.create_infer_request()
        self.names = {port.get_any_name() for port in compiled.inputs}

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feed = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self.names:
            feed["token_type_ids"] = np.zeros_like(input_ids)
        return np.array(self.request.infer(feed)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("--schemes", nargs="+", default=["hybrid", "static", "rowwise", "dynamic"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--openvino", action="store_true", help="also run every model through OpenVINO")
    args = parser.parse_args()

    machine = describe_machine(args.threads)
    print(f"CPU: {machine['cpu']}, {machine['cores']} cores; int8 flags: {machine['vector_extensions']}")
    card = ModelCard.load(args.checkpoint)
    tokenizer = TweetTokenizer.from_file(args.checkpoint, card.max_length, card.pad_token_id)
    _, splits = load_splits(args.data, card.data.spec)
    ids = tokenizer.encode(splits.test[TEXT].tolist()).ids
    train = splits.train[TEXT].tolist()
    with tempfile.TemporaryDirectory(prefix="int8-speed-") as work:
        models: dict[str, Path] = {}
        for scheme in args.schemes:
            directory = Path(work) / scheme
            directory.mkdir()
            paths, _ = export_variants(args.checkpoint, directory, "onnx-int8", scheme, print, train)
            models.setdefault("fp32 (fused)", paths["onnx-optimised"])
            models[scheme] = paths["onnx-int8"]
        engines = {
            name: Classifier(OnnxBackend(path, threads=args.threads), tokenizer, card)
            for name, path in models.items()
        }
        if args.openvino:
            for name, path in models.items():
                try:
                    backend = OpenVinoBackend(path, args.threads)
                except RuntimeError as error:  # a graph its ONNX reader cannot convert
                    print(f"OpenVINO cannot run {name}: {str(error).strip().splitlines()[-1]}")
                    continue
                engines[f"{name}, OpenVINO"] = Classifier(backend, tokenizer, card)
        labels = {
            name: engine.probabilities_of_ids(ids, args.batch).argmax(axis=1)
            for name, engine in engines.items()
        }  # also the warm-up
        agreement = {name: float((found == labels["fp32 (fused)"]).mean()) for name, found in labels.items()}
        batched: dict[str, list[float]] = {name: [] for name in engines}
        single: dict[str, list[float]] = {name: [] for name in engines}
        for repeat in range(args.repeats):
            print(f"repeat {repeat + 1}/{args.repeats}", flush=True)
            for name, engine in engines.items():
                started = time.perf_counter()
                engine.probabilities_of_ids(ids, args.batch)
                batched[name].append(len(ids) / (time.perf_counter() - started))
                started = time.perf_counter()
                for row in ids[:SINGLES]:
                    engine.probabilities_of_ids([row], 1)
                single[name].append(SINGLES / (time.perf_counter() - started))
    first = args.schemes[0]
    print(
        f"\n| model | tweets/s batched ({args.batch}, {args.threads} thread(s)) | tweets/s at batch 1 | "
        f"batched vs {first} | batch 1 vs {first} | test labels as fp32 |"
    )
    print("|---|---|---|---|---|---|")
    for name in engines:
        b, s = statistics.median(batched[name]), statistics.median(single[name])
        rb, rs = b / statistics.median(batched[first]), s / statistics.median(single[first])
        print(f"| {name} | {b:.0f} | {s:.0f} | {rb:.2f}x | {rs:.2f}x | {agreement[name]:.2%} |")


if __name__ == "__main__":
    main()
