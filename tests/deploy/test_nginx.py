"""Real NGINX in front of three real service processes on loopback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from live_server import LiveServer, free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "deploy" / "nginx"


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found is None:
        pytest.skip("nginx is not installed (.ci/run installs Debian's nginx)")
    return found


def prefix_for(tmp_path: Path, servers: list[str], port: int, rate: str | None = None) -> Path:
    """The shipped nginx.conf listening on loopback, with an upstream.conf naming ``servers``."""
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    config = (SHIPPED / "nginx.conf").read_text().replace("listen 8080;", f"listen 127.0.0.1:{port};")
    if rate is not None:
        config = config.replace("rate=50r/s", f"rate={rate}")
    (prefix / "nginx.conf").write_text(config)
    upstream = (SHIPPED / "upstream.conf").read_text()
    lines = [line for line in upstream.splitlines() if not line.strip().startswith("server ")]
    at = lines.index("    least_conn;") + 1
    lines[at:at] = [f"    server {server} max_fails=1 fail_timeout=10s;" for server in servers]
    (prefix / "upstream.conf").write_text("\n".join(lines) + "\n")
    return prefix


def test_shipped_config_passes_nginx_t(tmp_path) -> None:
    prefix = prefix_for(tmp_path, ["127.0.0.1:9", "127.0.0.1:10"], free_port())
    result = subprocess.run(
        [nginx_binary(), "-t", "-p", str(prefix), "-c", "nginx.conf"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def start_nginx(prefix: Path, port: int) -> tuple[subprocess.Popen[bytes], Path]:
    log = prefix / "stdout.log"
    process = subprocess.Popen(
        [nginx_binary(), "-p", str(prefix), "-c", "nginx.conf", "-g", "daemon off;"],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )

    def up() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(up)
    return process, log


def test_no_request_fails_when_a_replica_dies_under_load(onnx_package, tmp_path) -> None:
    replicas = [LiveServer(onnx_package, tmp_path / f"replica{i}.log") for i in range(3)]
    port = free_port()
    nginx = None
    try:
        for replica in replicas:
            replica.wait_ready()
        prefix = prefix_for(tmp_path, [f"127.0.0.1:{r.port}" for r in replicas], port, rate="10000r/s")
        nginx, log = start_nginx(prefix, port)
        statuses: Counter[int] = Counter()
        stop = [time.monotonic() + 60]  # brought forward once the replica is killed
        lock = threading.Lock()

        def answered() -> int:
            with lock:
                return sum(statuses.values())

        def client(number: int) -> None:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
                sent = 0
                while time.monotonic() < stop[0] and sent < 5000:
                    answer = http.post("/predict", json={"text": f"love the new ipad {number} {sent}"})
                    sent += 1
                    with lock:
                        statuses[answer.status_code] += 1

        threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        wait_until(lambda: answered() >= 150, timeout=30)  # under load before the kill
        killed_at = time.time()
        replicas[0].process.send_signal(signal.SIGKILL)
        stop[0] = time.monotonic() + 6  # and six more seconds of load without it
        for thread in threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in threads)

        assert sum(statuses.values()) > 200
        assert statuses == Counter({200: sum(statuses.values())})
        entries = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        after_kill = Counter(
            e["upstream"].split(", ")[-1]
            for e in entries
            if e["uri"] == "/predict"
            and time.mktime(time.strptime(e["time"][:19], "%Y-%m-%dT%H:%M:%S")) > killed_at + 1
        )
        before_kill = Counter(e["upstream"].split(", ")[-1] for e in entries if e["uri"] == "/predict")
        assert all(before_kill[f"127.0.0.1:{r.port}"] > 0 for r in replicas)
        live = [f"127.0.0.1:{r.port}" for r in replicas[1:]]
        assert all(after_kill[address] > 0 for address in live)
        assert after_kill[f"127.0.0.1:{replicas[0].port}"] == 0
    finally:
        if nginx is not None:
            nginx.send_signal(signal.SIGQUIT)
            nginx.wait(10)
        for replica in replicas:
            replica.stop()


def test_no_request_fails_when_a_worker_process_is_killed_under_load(onnx_package, tmp_path) -> None:
    two_workers = LiveServer(onnx_package, tmp_path / "two-workers.log", workers=2)
    other = LiveServer(onnx_package, tmp_path / "other.log")
    port = free_port()
    nginx = None
    try:
        two_workers.wait_ready()
        other.wait_ready()
        wait_until(lambda: len(two_workers.worker_pids()) == 2)
        servers = [f"127.0.0.1:{two_workers.port}", f"127.0.0.1:{other.port}"]
        nginx, _ = start_nginx(prefix_for(tmp_path, servers, port, rate="10000r/s"), port)
        statuses: Counter[int | str] = Counter()
        lock = threading.Lock()
        stop = [time.monotonic() + 60]  # brought forward once the worker is killed

        def client(number: int) -> None:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
                sent = 0
                while time.monotonic() < stop[0] and sent < 5000:
                    try:
                        answer = http.post("/predict", json={"text": f"love the new ipad {number} {sent}"})
                        outcome: int | str = answer.status_code
                    except httpx.TransportError as exc:
                        outcome = type(exc).__name__
                    sent += 1
                    with lock:
                        statuses[outcome] += 1

        threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        wait_until(lambda: sum(statuses.values()) >= 150, timeout=30)
        before = two_workers.worker_pids()
        os.kill(min(before), signal.SIGKILL)
        wait_until(lambda: len(two_workers.worker_pids() - before) == 1, timeout=30)  # replaced
        stop[0] = time.monotonic() + 2
        for thread in threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in threads)

        assert sum(statuses.values()) > 200
        assert statuses == Counter({200: sum(statuses.values())})
    finally:
        if nginx is not None:
            nginx.send_signal(signal.SIGQUIT)
            nginx.wait(10)
        two_workers.stop()
        other.stop()


def test_metrics_are_not_exposed_and_bodies_are_limited(onnx_package, tmp_path) -> None:
    replica = LiveServer(onnx_package, tmp_path / "replica.log")
    port = free_port()
    nginx = None
    try:
        replica.wait_ready()
        nginx, _ = start_nginx(prefix_for(tmp_path, [f"127.0.0.1:{replica.port}"], port), port)
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{replica.url}/metrics").status_code == 200
        assert httpx.get(f"{base}/metrics").status_code == 404
        too_big = httpx.post(
            f"{base}/predict", content=b"x" * 300_000, headers={"content-type": "application/json"}
        )
        assert too_big.status_code == 413
        echoed = httpx.post(f"{base}/predict", json={"text": "hi"}, headers={"X-Request-ID": "abc-123"})
        assert echoed.status_code == 200 and echoed.headers["x-request-id"] == "abc-123"
        with httpx.Client(base_url=base) as http:  # one client far over 50 requests/s
            burst = Counter(http.get("/healthz").status_code for _ in range(400))
        assert burst[429] > 0 and burst[200] >= 100
    finally:
        if nginx is not None:
            nginx.send_signal(signal.SIGQUIT)
            nginx.wait(10)
        replica.stop()
