"""Speed of each int8 scheme (and fp32) on one checkpoint, timed in turns in one process.

Usage: python scripts/compare_int8_speed.py CHECKPOINT DATA [--schemes hybrid static rowwise dynamic]
       [--threads 1] [--repeats 5] [--batch 32]

Each scheme is exported with the project's own ``export_variants`` (the static scheme calibrated on
the training split, as ``export`` does); then, repeat after repeat, every model scores the reference
test tweets in length-sorted batches of ``--batch`` and 200 of them one at a time. Taking turns
means background load hits every model alike, so the ratios hold on a shared machine even where the
absolute figures do not. Prints the CPU model and its int8 flags, and one row per model: tweets/s
batched and at batch 1 (medians), and the ratio to the first scheme.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from sentiment_api.bench import describe_machine
from sentiment_api.data import TEXT, load_splits
from sentiment_api.engine import Classifier, OnnxBackend
from sentiment_api.export import export_variants
from sentiment_api.model_card import ModelCard
from sentiment_api.tokenization import TweetTokenizer

SINGLES = 200


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("--schemes", nargs="+", default=["hybrid", "static", "rowwise", "dynamic"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
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
        batched: dict[str, list[float]] = {name: [] for name in engines}
        single: dict[str, list[float]] = {name: [] for name in engines}
        for engine in engines.values():
            engine.probabilities_of_ids(ids, args.batch)  # warm-up
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
        f"batched vs {first} | batch 1 vs {first} |"
    )
    print("|---|---|---|---|---|")
    for name in engines:
        b, s = statistics.median(batched[name]), statistics.median(single[name])
        rb, rs = b / statistics.median(batched[first]), s / statistics.median(single[first])
        print(f"| {name} | {b:.0f} | {s:.0f} | {rb:.2f}x | {rs:.2f}x |")


if __name__ == "__main__":
    main()
