"""The request path against its baselines: the service, the plain FastAPI + ONNX Runtime server on the
same package, and (``--before REV``) the service as it was at an earlier commit, all up at once,
under wrk at one connection and at 32, runs alternated.

    python bench/server/request_path.py [--before REV ...] [--connections 1 32] [--rounds 9] [--seconds 4]
    (make bench-request-path [BEFORE=REV])

The plain server (``plain_server.py``) computes the same products as our engine: on a CPU whose
ONNX Runtime int8 products saturate (no VNNI) it runs with ``--exact-int8``, as the engine does
there. ``--before`` checks REV out into a temporary worktree and serves it with that tree's code and
its own shipped package (PYTHONPATH first, the same virtual environment), so a change's cost is
measured against the code before it on the same host in the same minutes. Prints each run, then per
load the median p50, p99 and requests/s of each server, each round's p50, and the CPU model.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
from alternate import alternate, table
from models_memory import cpu_model
from wrk_load import HERE, REPO, SHIPPED_MODEL, require_wrk, serving, write_bodies

from sentiment_api.core.devices import this_cpu
from sentiment_api.serving.process import free_port

LOADS = (1, 32)


@contextmanager
def plain_server(model: Path, exact_int8: bool, log: Path) -> Iterator[str]:
    """``plain_server.py`` on a free loopback port until the block ends; its base URL once it answers."""
    port = free_port()
    command = [sys.executable, str(HERE / "plain_server.py"), str(model), "--port", str(port)]
    with log.open("w") as output:
        process = subprocess.Popen(
            [*command, *(["--exact-int8"] if exact_int8 else [])], stdout=output, stderr=output
        )
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > end:
                sys.exit(f"the plain server did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(30)


@contextmanager
def worktree(revision: str, parent: Path) -> Iterator[Path]:
    """The repository at ``revision`` in a temporary worktree, removed when the block ends."""
    path = parent / f"at-{revision}"
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(path), revision], check=True
    )
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)], check=False)


def onnx_digest(package: Path) -> str:
    return hashlib.sha256((package / "model.onnx").read_bytes()).hexdigest()[:12]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--before",
        metavar="REV",
        action="append",
        default=[],
        help="also serve the code at this commit (repeatable)",
    )
    parser.add_argument(
        "--connections", type=int, nargs="+", default=list(LOADS), help="the loads (default: 1 32)"
    )
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    require_wrk()
    exact = this_cpu().saturates_int8
    plain_name = "plain, exact int8" if exact else "plain"
    with tempfile.TemporaryDirectory(prefix="request-path-") as work, ExitStack() as stack:
        out = Path(work)
        bodies = write_bodies(out / "bodies.txt")
        urls = {"sentiment-api": stack.enter_context(serving(out, "service", model=SHIPPED_MODEL)).url}
        packages = {"sentiment-api": SHIPPED_MODEL}
        for revision in args.before:
            tree = stack.enter_context(worktree(revision, out))
            old_package = tree / "src" / "sentiment_api" / "models" / "default"
            old = serving(out, f"before-{revision}", model=old_package, PYTHONPATH=str(tree / "src"))
            urls[f"sentiment-api at {revision}"] = stack.enter_context(old).url
            packages[f"sentiment-api at {revision}"] = old_package
        urls[plain_name] = stack.enter_context(plain_server(SHIPPED_MODEL, exact, out / "plain.log"))
        packages[plain_name] = SHIPPED_MODEL
        results = alternate(urls, bodies, args.connections, args.rounds, args.seconds)
        digests = ", ".join(f"{name}: {onnx_digest(package)}" for name, package in packages.items())
    print("\n" + table(results, list(urls), args.connections))
    print(
        f"\nmodel.onnx sha256: {digests}; medians of {args.rounds} rounds of {args.seconds:g} s;",
        cpu_model(),
    )


if __name__ == "__main__":
    main()
