"""The benchmark table: accuracy, speed, latency, size and memory of every variant of a model.

Each variant runs in a fresh process (so its peak memory is its own), warms up first, then repeats
each measurement and reports the median. Results come out as JSON, Markdown and a PNG chart.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from sentiment_api.core.calibration import expected_calibration_error, plot_reliability, reliability
from sentiment_api.core.devices import DeviceChoice, this_cpu
from sentiment_api.core.engine import ONNX_FILE
from sentiment_api.core.files import write_text_atomic
from sentiment_api.core.model_card import ModelCard
from sentiment_api.core.plots import pyplot, save_png
from sentiment_api.data.tweets import LABEL, TEXT, load_splits
from sentiment_api.optimise.quantise import SCHEME

ALL_VARIANTS = ("pytorch", "onnx", "onnx-optimised", "onnx-int8", "onnx-fp16")
# the variants a checkpoint is benchmarked as, by device: int8 is for the CPU, fp16 for a GPU
LAST_VARIANTS: dict[str, tuple[str, ...]] = {
    "cpu": ("onnx-int8",),
    "cuda": ("onnx-fp16",),
    "auto": ("onnx-int8", "onnx-fp16"),
}


def describe_machine(threads: int) -> dict[str, Any]:
    """CPU model, cores, vector extensions and library versions, for the record."""
    from sentiment_api.core.model_card import library_versions

    cpu = this_cpu()
    return {
        "cpu": cpu.model,
        "cores": os.cpu_count(),
        "threads": threads,
        "vector_extensions": cpu.int8_flags,
        "gpu": gpu_name(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "versions": library_versions("onnxruntime", "torch", "tokenizers", "sentiment-api"),
    }


def gpu_name() -> str | None:
    """The first NVIDIA GPU's name, as nvidia-smi gives it; None without one (or without nvidia-smi)."""
    import subprocess

    if not shutil.which("nvidia-smi"):
        return None
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    names = result.stdout.strip().splitlines()
    return names[0].strip() if result.returncode == 0 and names else None


def model_size(directory: Path) -> int:
    """Bytes of the weights file of a package or checkpoint."""
    for name in (ONNX_FILE, "model.safetensors", "pytorch_model.bin"):
        if (directory / name).is_file():
            return (directory / name).stat().st_size
    return 0


def peak_memory_mb() -> float:
    """This process's peak resident memory.

    ``VmHWM`` belongs to the address space, which ``exec`` replaces, so a spawned child reports its
    own peak; ``ru_maxrss`` (the fallback off Linux) carries the parent's peak across ``exec``.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_variant(
    directory: str,
    texts: list[str],
    truth: list[str] | None,
    threads: int,
    batch_size: int,
    repeats: int,
    device: DeviceChoice = "cpu",
) -> dict[str, Any]:
    """Runs in a child process: load one variant, warm up, time batched and batch-1 passes."""
    from sentiment_api.core.engine import Classifier
    from sentiment_api.core.metrics import label_indices, score_probabilities

    classifier = Classifier.load(Path(directory), threads=threads, device=device)
    classifier.probabilities(texts, batch_size)  # warm-up: arenas, kernels, caches
    for text in texts[:32]:
        classifier.probabilities([text])

    batched: list[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        probabilities, _ = classifier.probabilities(texts, batch_size)
        batched.append(time.perf_counter() - start)

    single_passes: list[float] = []
    latencies: list[float] = []
    for _ in range(max(1, repeats // 2)):
        start_pass = time.perf_counter()
        for text in texts:
            start = time.perf_counter()
            classifier.probabilities([text])
            latencies.append(time.perf_counter() - start)
        single_passes.append(time.perf_counter() - start_pass)

    result: dict[str, Any] = {
        "device": classifier.device,
        "total_seconds": statistics.median(batched),
        "batched_per_second": len(texts) / statistics.median(batched),
        "batch1_per_second": len(texts) / statistics.median(single_passes),
        "latency_p50_ms": float(np.percentile(latencies, 50) * 1000),
        "latency_p99_ms": float(np.percentile(latencies, 99) * 1000),
        "peak_memory_mb": peak_memory_mb(),
    }
    if truth is not None:
        metrics = score_probabilities(truth, probabilities, classifier.labels)
        indices = label_indices(truth, classifier.labels)
        result.update(
            accuracy=metrics.accuracy,
            macro_f1=metrics.macro_f1,
            ece=expected_calibration_error(probabilities, indices),
            reliability=reliability(probabilities, indices),
        )
    return result


def _in_child(function: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(function, args)


def prepare_variants(
    target: Path,
    work: Path,
    log: Callable[[str], None],
    device: DeviceChoice = "cpu",
) -> dict[str, Path]:
    """Model directories per variant: a checkpoint yields PyTorch and the ONNX variants for
    ``device`` (``LAST_VARIANTS``); a package only itself."""
    from sentiment_api.core.tokenization import TOKENIZER_FILE
    from sentiment_api.optimise.export import DEVICES_OF_VARIANT, export_variants, onnx_facts

    card = ModelCard.load(target)
    if card.variant != "pytorch":
        return {card.variant: target}
    variants = {"pytorch": target}
    paths, _ = export_variants(target, work, LAST_VARIANTS[device], log)
    for variant, path in paths.items():
        package = work / variant
        package.mkdir()
        shutil.move(str(path), package / ONNX_FILE)
        shutil.copy2(target / TOKENIZER_FILE, package / TOKENIZER_FILE)
        quantisation = SCHEME if variant == "onnx-int8" else None
        facts = onnx_facts(package / ONNX_FILE, {}, quantisation, DEVICES_OF_VARIANT[variant])
        card.model_copy(update={"variant": variant, "package": facts}).save(package)  # checked on load
        variants[variant] = package
    return variants


def run_bench(
    target: Path,
    data_path: Path,
    *,
    threads: int = 2,
    batch_size: int = 64,
    repeats: int = 5,
    speed_only: bool = False,
    device: DeviceChoice = "cpu",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measure every variant of ``target`` on the test split of ``data_path``, on ``device``."""
    card = ModelCard.load(target)
    _, splits = load_splits(data_path, card.data.spec)
    texts = splits.test[TEXT].tolist()
    truth = None if speed_only else splits.test[LABEL].tolist()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sentiment-bench-") as work:
        variants = prepare_variants(Path(target), Path(work), log, device)
        for index, (variant, directory) in enumerate(variants.items(), start=1):
            log(f"[{index}/{len(variants)}] measuring {variant}")
            row = _in_child(
                measure_variant, str(directory), texts, truth, threads, batch_size, repeats, device
            )
            rows.append({"variant": variant, "size_mb": model_size(directory) / 1e6, **row})
    baseline = next((r for r in rows if r["variant"] == "pytorch"), None)
    for row in rows:
        row["improvement"] = baseline["total_seconds"] / row["total_seconds"] if baseline else None
    return {
        "model": str(target),
        "base_model": card.base_model,
        "speed_only": speed_only,
        "tweets": len(texts),
        "batch_size": batch_size,
        "repeats": repeats,
        "quantisation": SCHEME,
        "device": device,
        "date": datetime.now(UTC).date().isoformat(),
        "machine": describe_machine(threads),
        "rows": rows,
    }


def format_table(result: dict[str, Any]) -> str:
    """The benchmark as a Markdown table."""
    columns = [
        ("variant", "variant", "{}"),
        ("accuracy", "accuracy", "{:.4f}"),
        ("macro_f1", "macro-F1", "{:.4f}"),
        ("ece", "ECE", "{:.4f}"),
        ("total_seconds", "total s", "{:.3f}"),
        ("improvement", "improvement", "{:.1f}×"),
        ("batched_per_second", "tweets/s batched", "{:.0f}"),
        ("batch1_per_second", "tweets/s batch 1", "{:.0f}"),
        ("latency_p50_ms", "p50 ms", "{:.2f}"),
        ("latency_p99_ms", "p99 ms", "{:.2f}"),
        ("size_mb", "size MB", "{:.1f}"),
        ("peak_memory_mb", "peak RSS MB", "{:.0f}"),
        ("device", "device", "{}"),
    ]
    lines = [
        "| " + " | ".join(title for _, title, _ in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for row in result["rows"]:
        cells = ["—" if row.get(key) is None else fmt.format(row[key]) for key, _, fmt in columns]
        lines.append("| " + " | ".join(cells) + " |")
    machine = result["machine"]
    lines.append("")
    lines.append(
        f"{result['tweets']} test tweets, batch {result['batch_size']}, {machine['threads']} threads, "
        f"median of {result['repeats']} repeats after warm-up; {machine['cpu']}, {machine['cores']} cores "
        f"({', '.join(machine['vector_extensions'])})"
        + (f"; GPU {machine['gpu']}" if machine.get("gpu") else "")
        + f"; {result['date']}. "
        "total s: the whole test split batched; improvement: PyTorch total / variant total."
    )
    return "\n".join(lines)


def plot_bench(result: dict[str, Any], path: Path) -> Path:
    """Bars of throughput (batched and batch 1) and size per variant, as a PNG."""
    plt = pyplot()

    rows = result["rows"]
    names = [row["variant"] for row in rows]
    positions = np.arange(len(rows))
    figure, (speed, size) = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    speed.bar(positions - 0.2, [r["batched_per_second"] for r in rows], 0.4, label="batched")
    speed.bar(positions + 0.2, [r["batch1_per_second"] for r in rows], 0.4, label="batch 1")
    speed.set_xticks(positions, names, rotation=15)
    speed.set_ylabel("tweets per second")
    speed.legend()
    speed.set_title("throughput")
    size.bar(positions, [r["size_mb"] for r in rows], 0.5, color="tab:gray")
    size.set_xticks(positions, names, rotation=15)
    size.set_ylabel("MB")
    size.set_title("model size")
    figure.suptitle(f"{Path(result['model']).name} on {result['machine']['cpu']}", fontsize=10)
    return save_png(figure, path)


def write_bench(result: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """bench.json, bench.md and bench.png in ``out_dir``, and reliability.png (each variant's scores
    against observed accuracy) when accuracy was measured."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "bench.json", json.dumps(result, indent=2) + "\n")
    write_text_atomic(out_dir / "bench.md", format_table(result) + "\n")
    written = {name: out_dir / f"bench.{name}" for name in ("json", "md", "png")}
    plot_bench(result, written["png"])
    curves = {
        row["variant"]: (row["reliability"], row["ece"]) for row in result["rows"] if "reliability" in row
    }
    if curves:
        written["reliability"] = plot_reliability(
            curves, out_dir / "reliability.png", f"{result['model']}: reliability"
        )
    return written
