"""Train several configurations over several seeds and report the spread of test scores.

Usage: python scripts/compare_training.py DATA --out runs/sweep --seeds 1 2 3 \
           --config baseline '{}' --config lr5e-5 '{"learning_rate": 5e-5}'

Each run is the project's own ``train`` (the same code as ``sentiment-api train``); results are
appended to OUT/results.jsonl so an interrupted sweep resumes, and a markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from sentiment_api.training import TrainingConfig, train

METRICS = ("accuracy", "balanced_accuracy", "macro_f1")


def summarise(results: list[dict]) -> str:
    """Markdown: one row per configuration, mean ± sd [min–max] of each test metric."""
    lines = [
        "| config | seeds | " + " | ".join(f"test {m}" for m in METRICS) + " | val macro_f1 | minutes |",
        "|---|---|" + "---|" * (len(METRICS) + 2),
    ]
    for name in dict.fromkeys(r["config"] for r in results):
        rows = [r for r in results if r["config"] == name]
        cells = []
        for metric in METRICS:
            values = [r["test"][metric] for r in rows]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.3f} ± {sd:.3f} [{min(values):.3f}–{max(values):.3f}]")
        val = statistics.mean(r["validation"]["macro_f1"] for r in rows)
        minutes = statistics.mean(r["seconds"] for r in rows) / 60
        lines.append(f"| {name} | {len(rows)} | " + " | ".join(cells) + f" | {val:.3f} | {minutes:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--config", nargs=2, action="append", metavar=("NAME", "JSON"), default=[])
    parser.add_argument("--keep", action="store_true", help="Keep the checkpoints.")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "results.jsonl"
    results = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    done = {(r["config"], r["seed"]) for r in results}
    for name, overrides in args.config or [("default", "{}")]:
        for seed in args.seeds:
            if (name, seed) in done:
                continue
            config = TrainingConfig(**{**json.loads(overrides), "seed": seed})
            out = args.out / f"{name}-s{seed}"
            card = train(args.data, out, config, overwrite=True, progress=False)
            row = {
                "config": name,
                "seed": seed,
                "overrides": json.loads(overrides),
                "best_epoch": card.training.best_epoch,
                "seconds": card.training.seconds,
                **{split: scores.headline() for split, scores in card.metrics.items()},
            }
            with log.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            results.append(row)
            print(json.dumps(row), flush=True)
            if not args.keep:
                import shutil

                shutil.rmtree(out)
    print(summarise(results))


if __name__ == "__main__":
    main()
