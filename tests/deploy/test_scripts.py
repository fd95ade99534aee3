"""The shell scripts: each names the system packages it misses, and stops the server it starts
however it ends (the real scripts, the real server; only the load generator is made to fail). The
benchmark scripts: each answers --help, reaches into no other folder, and the soak and GPU benchmarks
run end to end in a short mode."""

from __future__ import annotations

import ast
import contextlib
import csv
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from live_server import free_port

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent  # the environment running the tests, for the scripts' VENV


def path_without(directory: Path, *hidden: str) -> str:
    """A PATH holding every program of /usr/bin and /bin except ``hidden``."""
    directory.mkdir()
    for folder in (Path("/usr/bin"), Path("/bin")):
        for program in folder.iterdir():
            link = directory / program.name
            if program.name not in hidden and not link.exists() and not link.is_symlink():
                link.symlink_to(program)
    return str(directory)


@pytest.mark.parametrize(
    ("script", "hidden", "line"),
    [
        (
            "bench/server/wrk.sh",
            ("wrk", "taskset", "curl"),
            "missing wrk taskset curl: apt-get install -y wrk util-linux curl",
        ),
        ("deploy/loadtest/run_k6.sh", ("curl",), "missing curl: apt-get install -y curl"),
        (
            "deploy/build_image.sh",
            ("podman", "runc", "curl", "debootstrap"),
            "missing podman runc curl debootstrap: apt-get install -y podman runc curl debootstrap",
        ),
    ],
    ids=["wrk-bench", "k6-loadtest", "build-image"],
)
def test_a_script_names_the_packages_it_misses_in_one_line(script, hidden, line, tmp_path) -> None:
    environment = {**os.environ, "PATH": path_without(tmp_path / "bin", *hidden), "VENV": str(VENV)}
    result = subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(REPO / script)],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
    )

    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [line]


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def script_run(script: str, log: Path, timeout: float, **env: str) -> Iterator[int]:
    """Run ``script`` to its end and give its exit code; then kill anything it left running (in
    its own session, so nothing else is touched)."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            [shutil.which("bash") or "/bin/bash", str(REPO / script)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "VENV": str(VENV), **env},
            start_new_session=True,
        )
        try:
            yield process.wait(timeout)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def test_the_k6_script_stops_its_server_when_k6_fails(onnx_package, tmp_path) -> None:
    if not (VENV / "bin" / "k6").exists():
        pytest.skip("k6 is not installed (dev extra)")
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (apt-get install -y curl)")
    port = free_port()
    log = tmp_path / "script.log"
    limits = {"VUS": "2", "DURATION": "1s", "P99_MS": "0.001"}  # a threshold no server meets
    with script_run(
        "deploy/loadtest/run_k6.sh", log, 180, MODEL=str(onnx_package), PORT=str(port), **limits
    ) as code:
        assert code == 99, log.read_text()
        assert not listening(port), "the server outlived the script"


@pytest.mark.slow
def test_the_wrk_script_stops_its_server_when_wrk_fails(onnx_package, tiny_csv, tmp_path) -> None:
    for program, package in (("taskset", "util-linux"), ("curl", "curl")):
        if shutil.which(program) is None:
            pytest.skip(f"{program} is not installed (apt-get install -y {package})")
    tweets = tmp_path / "tweets.xlsx"
    pd.read_csv(tiny_csv).to_excel(tweets, sheet_name="Train", index=False)
    fake = tmp_path / "fake-bin"
    fake.mkdir()
    (fake / "wrk").write_text("#!/bin/sh\necho 'wrk: failing on purpose' >&2\nexit 1\n")
    (fake / "wrk").chmod(0o755)
    port, out, log = free_port(), tmp_path / "out", tmp_path / "script.log"
    environment = {
        "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}",
        "DATA": str(tweets),
        "OUT": str(out),
        "PORT": str(port),
        "WORKERS": "1",
        "CONNECTIONS": "1",
    }
    with script_run("bench/server/wrk.sh", log, 300, **environment) as code:
        assert code != 0, log.read_text()
        assert "wrk: failing on purpose" in log.read_text()
        assert (out / "server-w1.log").exists(), log.read_text()  # the server had started
        assert not listening(port), "the server outlived the script"


@pytest.mark.slow
def test_the_gpu_benchmark_measures_what_this_machine_has_and_says_why_it_skips_the_rest(
    trained_tiny_bert, tmp_path
) -> None:
    out = tmp_path / "gpu-bench"
    environment = {**os.environ, "OUT": str(out), "QUICK": "1", "PYTHON": sys.executable}
    result = subprocess.run(
        [
            shutil.which("bash") or "/bin/bash",
            str(REPO / "bench" / "engine" / "gpu.sh"),
            str(trained_tiny_bert),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=environment,
    )

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.startswith("== GPU\n")
    results = json.loads((out / "results.json").read_text())
    measured = {row["engine"] for row in results["offline"]}
    skipped = {row["what"]: row["why"] for row in results["skipped"]}
    assert {"ONNX Runtime int8 (onnx-int8)", "PyTorch fp32"} <= measured
    for engine in (
        "PyTorch fp16",
        "PyTorch bf16",
        "ONNX Runtime CUDA EP fp16",
        "ONNX Runtime TensorRT EP fp16",
    ):
        assert engine in measured or skipped[f"{engine} on cuda"]  # measured, or skipped saying why
    cpu_http = [row for row in results["http"] if row["device"] == "cpu"]
    if shutil.which("wrk"):
        assert [row["connections"] for row in cpu_http] == [32, 256]
        assert all(row["requests_per_s"] > 0 for row in cpu_http)
    else:
        assert cpu_http == []
        assert "apt-get install -y wrk" in skipped["HTTP CPU, ONNX Runtime int8, 1 workers"]
    assert "| service | workers | connections | requests/s |" in (out / "results.md").read_text()


BENCH_SCRIPTS = sorted(
    path.relative_to(REPO)
    for path in [*REPO.glob("bench/*/*.py"), REPO / "deploy" / "loadtest" / "make_tweets.py"]
    if path.name not in {"wrk_load.py", "alternate.py"}  # imported by the server benches, not run
)


@pytest.mark.parametrize("script", BENCH_SCRIPTS, ids=str)
def test_a_benchmark_script_answers_help(script) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / script), "--help"], capture_output=True, text=True, timeout=120, cwd=REPO
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "usage" in result.stdout.lower()


@pytest.mark.parametrize("script", sorted(REPO.glob("bench/*/*.py")), ids=lambda path: path.name)
def test_a_benchmark_script_reaches_into_no_other_folder(script) -> None:
    """No sys.path patching, and every import is the package, an installed module, or a file beside it."""
    tree = ast.parse(script.read_text())
    assert "sys.path" not in ast.unparse(tree)
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    for top in {name.split(".")[0] for name in names}:
        beside = (script.parent / f"{top}.py").is_file()
        assert beside or top == "sentiment_api" or importlib.util.find_spec(top) is not None, top
        assert top not in {"conftest", "live_server", "tiny_models", "tweet_files"}  # the tests' helpers


@pytest.mark.parametrize(
    "script", sorted([*REPO.glob("bench/*/*.sh"), *REPO.glob("deploy/**/*.sh")]), ids=lambda path: path.name
)
def test_a_shell_script_parses(script) -> None:
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_the_soak_holds_a_rate_and_writes_its_figures(onnx_package, tmp_path) -> None:
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (apt-get install -y wrk)")
    out = tmp_path / "soak"
    command = [sys.executable, str(REPO / "bench" / "server" / "soak.py"), "--rate", "20", "--minutes", "0.2"]
    command += ["--window-s", "3", "--warmup-minutes", "0.05", "--compare-minutes", "0.05", "--out", str(out)]
    environment = {**os.environ, "MODEL": str(onnx_package), "SENTIMENT_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=environment)

    assert result.returncode in (0, 1), result.stdout[-3000:] + result.stderr[-3000:]  # 1: a check failed
    summary = json.loads((out / "soak.json").read_text())
    rows = list(csv.DictReader((out / "soak.csv").open()))
    assert summary["rate_requests_per_s"] == 20 and summary["capacity_requests_per_s"] is None
    assert len(rows) == 4 and all(float(row["requests_per_s"]) > 0 for row in rows)
    assert summary["verdict"]["errors"] == 0
    assert (out / "soak.png").read_bytes().startswith(b"\x89PNG")
