"""The engine and the HTTP service on an NVIDIA GPU, and on the same machine's CPU: one table.

    bash bench/engine/gpu.sh [CHECKPOINT]      (make bench-gpu; the wrapper: GPU name, environment, then this)
    python bench/engine/gpu.py --out DIR [--checkpoint DIR] [--cpu-only] [--quick]

Offline, per engine: tweets/s at batch 1 and batched (64 and 256, length-bucketed), p50/p99 latency at
batch 1, tokenisation included, for PyTorch fp16 and bf16 (and fp16 under torch.compile), ONNX Runtime's
CUDA provider on the fp16 package, its TensorRT provider where there, and the CPU engine (int8 on ONNX
Runtime). Over HTTP: the service's requests/s and latency at 32 and 256 connections, wrk on the same
machine (bench/server/post.lua, with several threads so that it is not the limit), on the GPU and on
the CPU; the service started by sentiment_api.serving.process.

The model: CHECKPOINT, else runs/default-checkpoint, else a MiniLM-L6-shaped BERT with random weights
and the shipped tokenizer (speed does not depend on the weights). Texts: the reference test tweets
(deploy/loadtest/tweets.json).

Every part runs in a child process under a time limit; a part whose runtime is missing (no GPU, a CPU
build of torch, no onnxruntime-gpu, no TensorRT, no web stack, no wrk) is recorded as skipped, with the
reason, and the rest goes on. results.json and results.md are rewritten after every part, so a run cut short
keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "src" / "sentiment_api" / "models" / "default"
POST_LUA = REPO / "bench" / "server" / "post.lua"  # wrk's POST /predict script, with the server benchmarks


def one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:400]


class Results:
    """What was measured and what was skipped, written out after every part."""

    def __init__(self, out: Path, machine: dict[str, Any]) -> None:
        self.out = out
        self.data: dict[str, Any] = {"machine": machine, "offline": [], "http": [], "skipped": []}

    def add(self, part: str, row: dict[str, Any]) -> None:
        self.data[part].append(row)
        self.write()

    def skip(self, what: str, why: str) -> None:
        print(f"skipped {what}: {why}", flush=True)
        self.data["skipped"].append({"what": what, "why": why})
        self.write()

    def write(self) -> None:
        (self.out / "results.json").write_text(json.dumps(self.data, indent=2) + "\n")
        (self.out / "results.md").write_text(markdown(self.data) + "\n")


def markdown(data: dict[str, Any]) -> str:
    def cell(value: Any, fmt: str) -> str:
        return "—" if value is None else fmt.format(value)

    machine = data["machine"]
    lines = [
        f"GPU: {machine.get('gpu') or 'none'}; CPU: {machine['cpu']} ({machine['cores']} cores); "
        f"torch {machine.get('torch')}, CUDA {machine.get('torch_cuda')}; "
        f"ONNX Runtime {machine.get('onnxruntime')} ({', '.join(machine.get('providers') or [])}); "
        f"{machine['date']}",
        "",
        "| engine | device | tweets/s batch 1 | p50 ms | p99 ms | tweets/s batch 64 | tweets/s batch 256 |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in data["offline"]:
        lines.append(
            f"| {row['engine']} | {row['device']} | {cell(row['batch1_per_second'], '{:.0f}')} "
            f"| {cell(row['p50_ms'], '{:.2f}')} | {cell(row['p99_ms'], '{:.2f}')} "
            f"| {cell(row['batched_per_second'].get('64'), '{:.0f}')} "
            f"| {cell(row['batched_per_second'].get('256'), '{:.0f}')} |"
        )
    lines += [
        "",
        "| service | workers | connections | requests/s | p50 ms | p99 ms | not 200 (429: shed) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in data["http"]:
        lines.append(
            f"| {row['service']} | {row['workers']} | {row['connections']} | {row['requests_per_s']:.0f} "
            f"| {cell(row['p50_ms'], '{:.1f}')} | {cell(row['p99_ms'], '{:.1f}')} | {row['errors']} |"
        )
    if data["skipped"]:
        lines += ["", "Skipped:", *(f"- {s['what']}: {s['why']}" for s in data["skipped"])]
    return "\n".join(lines)


def describe_machine() -> dict[str, Any]:
    from sentiment_api.core.devices import onnxruntime_providers, this_cpu
    from sentiment_api.optimise.bench import gpu_name

    found: dict[str, Any] = {
        "gpu": gpu_name(),
        "cpu": this_cpu().model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "providers": onnxruntime_providers(),
        "date": time.strftime("%Y-%m-%d"),
    }
    try:
        import torch

        found.update(torch=torch.__version__, torch_cuda=torch.version.cuda)
    except ImportError:
        found.update(torch=None, torch_cuda=None)
    try:
        import onnxruntime

        found["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        found["onnxruntime"] = None
    return found


# --- the model


def random_minilm(directory: Path) -> Path:
    """A checkpoint shaped like all-MiniLM-L6-v2 (the shipped model), random weights, shipped tokenizer."""
    from transformers import BertConfig, BertForSequenceClassification

    from sentiment_api.core.model_card import ModelCard
    from sentiment_api.core.tokenization import TOKENIZER_FILE

    card = ModelCard.load(SHIPPED)
    vocab = json.loads((SHIPPED / TOKENIZER_FILE).read_text())["model"]["vocab"]
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=1536,
        max_position_embeddings=512,
        num_labels=len(card.labels),
        pad_token_id=card.pad_token_id,
    )
    BertForSequenceClassification(config).save_pretrained(directory)
    shutil.copy2(SHIPPED / TOKENIZER_FILE, directory / TOKENIZER_FILE)
    update = {"variant": "pytorch", "package": None, "gate": None, "source": None, "name": "random-minilm"}
    card.model_copy(update=update).save(directory)
    return directory


def prepare(checkpoint: Path, work: Path) -> dict[str, Path]:
    """Packages of every variant (int8 for the CPU, fp16 for the GPU), by variant."""
    from sentiment_api.optimise.bench import prepare_variants

    return prepare_variants(checkpoint, work, lambda m: print(m, flush=True), device="auto")


# --- offline


def measure_engine(spec: dict[str, Any], texts: list[str], quick: bool) -> dict[str, Any]:
    """In a child process: load one engine, warm it up, time batch 1 and batched passes."""
    import numpy as np

    from sentiment_api.core.engine import Classifier

    classifier = Classifier.load(
        Path(spec["model"]),
        threads=spec.get("threads"),
        spin=False,
        device=spec["device"],
        precision=spec.get("precision", "float16"),
        tensorrt=spec.get("tensorrt", False),
    )
    if spec.get("compile"):
        classifier.backend.compile()  # type: ignore[attr-defined]
    clean = classifier.normalise(texts)
    sizes = (64,) if quick else (64, 256)
    for size in sizes:  # warm-up: kernels, arenas, compiled graphs, TensorRT engines
        classifier.probabilities(clean, size)
    singles = clean[: 16 if quick else 300]
    for text in singles[:32]:
        classifier.probabilities([text])
    latencies = []
    started = time.perf_counter()
    for text in singles:
        begin = time.perf_counter()
        classifier.probabilities([text])
        latencies.append(time.perf_counter() - begin)
    single_seconds = time.perf_counter() - started
    batched: dict[str, float] = {}
    for size in sizes:
        runs = []
        for _ in range(1 if quick else 5):
            begin = time.perf_counter()
            classifier.probabilities(clean, size)
            runs.append(time.perf_counter() - begin)
        batched[str(size)] = len(clean) / statistics.median(runs)
    return {
        "device": classifier.device,
        "batch1_per_second": len(singles) / single_seconds,
        "p50_ms": float(np.percentile(latencies, 50) * 1000),
        "p99_ms": float(np.percentile(latencies, 99) * 1000),
        "batched_per_second": batched,
        "tweets": len(clean),
    }


def _guarded(function: Any, *args: Any) -> dict[str, Any]:
    try:
        return {"ok": function(*args)}
    except BaseException as exc:  # everything, so the parent gets a reason rather than a dead pool
        traceback.print_exc()
        return {"error": one_line(exc)}


def in_child(function: Any, args: tuple[Any, ...], timeout_s: float) -> dict[str, Any]:
    """``function(*args)`` in a fresh process: its result, or ``{"error": why}``."""
    pool = multiprocessing.get_context("spawn").Pool(1)
    try:
        return dict(pool.apply_async(_guarded, (function, *args)).get(timeout_s))
    except multiprocessing.TimeoutError:
        return {"error": f"took longer than {timeout_s:.0f} s"}
    finally:
        pool.terminate()
        pool.join()


def engines(packages: dict[str, Path], checkpoint: Path | None) -> list[dict[str, Any]]:
    """The engines to time, each with the runtime it needs."""
    cpu = packages.get("onnx-int8", SHIPPED)
    specs: list[dict[str, Any]] = [
        {
            "engine": f"ONNX Runtime int8 ({cpu.name})",
            "model": cpu,
            "device": "cpu",
            "runtime": "onnxruntime",
        },
    ]
    if checkpoint is not None:
        specs.append({"engine": "PyTorch fp32", "model": checkpoint, "device": "cpu", "runtime": "torch"})
    if checkpoint is not None:
        for name, precision, compiled in (
            ("PyTorch fp16", "float16", False),
            ("PyTorch bf16", "bfloat16", False),
            ("PyTorch fp16 + torch.compile", "float16", True),
        ):
            specs.append(
                {"engine": name, "model": checkpoint, "device": "cuda", "runtime": "torch",
                 "precision": precision, "compile": compiled}
            )  # fmt: skip
    fp16 = packages.get("onnx-fp16")
    for name, tensorrt in (("ONNX Runtime CUDA EP fp16", False), ("ONNX Runtime TensorRT EP fp16", True)):
        specs.append(
            {"engine": name, "model": fp16, "device": "cuda", "runtime": "onnxruntime", "tensorrt": tensorrt}
        )
    return specs


def why_not(spec: dict[str, Any]) -> str | None:
    """Why an engine cannot run here, found before starting it; None when it may."""
    from sentiment_api.core.devices import TENSORRT_PROVIDER, CudaProbe, onnxruntime_providers

    if spec["model"] is None:
        return "no fp16 package (the export needs torch, transformers and onnx)"
    if spec["device"] == "cuda":
        problems = CudaProbe.here(spec["runtime"]).problems()
        if problems:
            return "; ".join(problems)
        if spec.get("tensorrt") and TENSORRT_PROVIDER not in onnxruntime_providers():
            return f"this ONNX Runtime has no {TENSORRT_PROVIDER}"
    elif spec["runtime"] == "onnxruntime" and not onnxruntime_providers():
        return "onnxruntime is not installed"
    return None


# --- HTTP


def http_load(url: str, bodies: Path, connections: int, seconds: float, threads: int) -> dict[str, Any]:
    """Requests/s and latency of wrk's ``connections`` (over ``threads`` threads) for ``seconds``."""
    threads = max(1, min(threads, connections))
    command = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "60s",
        "-s", str(POST_LUA), url, "--", str(bodies),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
    lines = [line for line in done.stdout.splitlines() if line.startswith('{"wrk":')]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({done.returncode}): {(done.stdout + done.stderr)[-400:]}")
    found = json.loads(lines[-1])["wrk"]
    statuses = {status: int(count) for status, count in found["statuses"].items()}
    errors = sum(found["errors"][kind] for kind in ("connect", "read", "write", "timeout"))
    answered = found["requests"] > 0
    return {
        "requests_per_s": statuses.get("200", 0) / found["seconds"],
        "p50_ms": found["latency_ms"]["p50"] if answered else None,
        "p99_ms": found["latency_ms"]["p99"] if answered else None,
        "errors": sum(count for status, count in statuses.items() if status != "200") + errors,
        "statuses": statuses,
    }


def serve_and_load(
    results: Results, service: str, model: Path, device: str, workers: int, args: argparse.Namespace
) -> None:
    what = f"HTTP {service}, {workers} workers"
    if shutil.which("wrk") is None:
        results.skip(what, "wrk is not installed (apt-get install -y wrk)")
        return
    try:
        from sentiment_api.serving.process import ServiceProcess, ServiceStartError
    except ImportError as exc:  # the web stack (the serve extra) is missing
        results.skip(what, one_line(exc))
        return
    bodies = results.out / "bodies.txt"
    texts = json.loads((REPO / "deploy" / "loadtest" / "tweets.json").read_text())
    bodies.write_text("".join(json.dumps({"text": str(text)}) + "\n" for text in texts))
    server = ServiceProcess(
        model,
        env={"SENTIMENT_LOG_LEVEL": "warning"},
        workers=workers,
        log=results.out / f"server-{device}-{workers}.log",
        options=["--device", device],
    )
    try:
        try:
            server.wait_ready(args.ready_s)
        except ServiceStartError as exc:
            results.skip(what, " ".join(str(exc).split())[-400:])
            return
        for connections in args.connections:
            http_load(server.url, bodies, connections, args.warmup_s, args.loaders)
            row = http_load(server.url, bodies, connections, args.seconds, args.loaders)
            row.update(service=service, device=device, workers=workers, connections=connections)
            print(f"HTTP {service} workers={workers} c={connections}: {row['requests_per_s']:.0f} req/s")
            results.add("http", row)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--cpu-only", action="store_true", help="Skip every GPU part (a dry run).")
    parser.add_argument("--quick", action="store_true", help="Few tweets, short runs: checks the script.")
    parser.add_argument("--part-timeout-s", type=float, default=240.0)
    parser.add_argument("--seconds", type=float, default=10.0, help="Each HTTP measurement.")
    parser.add_argument("--warmup-s", type=float, default=3.0, help="wrk takes whole seconds, 1 at least")
    parser.add_argument("--ready-s", type=float, default=180.0)
    parser.add_argument("--connections", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    parser.add_argument(
        "--loaders", type=int, default=max(1, min(8, (os.cpu_count() or 2) // 4)), help="wrk's threads"
    )
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.warmup_s, args.workers = min(args.seconds, 2.0), 1.0, [1]
    args.out.mkdir(parents=True, exist_ok=True)
    results = Results(args.out, describe_machine())
    print(f"GPU: {results.data['machine']['gpu'] or 'none found by nvidia-smi'}", flush=True)
    texts = json.loads((REPO / "deploy" / "loadtest" / "tweets.json").read_text())
    texts = [str(t) for t in texts][: 64 if args.quick else None]

    work = Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    try:
        checkpoint: Path | None = args.checkpoint or REPO / "runs" / "default-checkpoint"
        if not (checkpoint / "model_card.json").is_file():
            try:
                checkpoint = random_minilm(work / "checkpoint")
            except Exception as exc:
                results.skip("a MiniLM-shaped checkpoint (every PyTorch row)", one_line(exc))
                checkpoint = None
        packages: dict[str, Path] = {}
        if checkpoint is not None:
            try:
                packages = prepare(checkpoint, work)
            except Exception as exc:
                results.skip("ONNX export (the int8 and fp16 packages)", one_line(exc))

        for spec in engines(packages, checkpoint):
            reason = "--cpu-only" if args.cpu_only and spec["device"] == "cuda" else why_not(spec)
            if reason:
                results.skip(f"{spec['engine']} on {spec['device']}", reason)
                continue
            print(f"measuring {spec['engine']} on {spec['device']}", flush=True)
            outcome = in_child(measure_engine, (spec, texts, args.quick), args.part_timeout_s)
            if "error" in outcome:
                results.skip(f"{spec['engine']} on {spec['device']}", outcome["error"])
            else:
                results.add("offline", {"engine": spec["engine"], **outcome["ok"]})

        servers = [("CPU, ONNX Runtime int8", packages.get("onnx-int8", SHIPPED), "cpu")]
        if args.cpu_only:
            results.skip("HTTP on the GPU", "--cpu-only")
        else:
            fp16 = packages.get("onnx-fp16")
            if fp16 is not None and not why_not({"model": fp16, "device": "cuda", "runtime": "onnxruntime"}):
                servers.insert(0, ("GPU, ONNX Runtime CUDA EP fp16", fp16, "cuda"))
            elif checkpoint is not None and not why_not(
                {"model": checkpoint, "device": "cuda", "runtime": "torch"}
            ):
                servers.insert(0, ("GPU, PyTorch fp16", checkpoint, "cuda"))
            else:
                results.skip("HTTP on the GPU", "neither ONNX Runtime nor PyTorch can run on CUDA here")
        for service, model, device in servers:
            for workers in args.workers:
                serve_and_load(results, service, model, device, workers, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print((args.out / "results.md").read_text())


if __name__ == "__main__":
    main()
