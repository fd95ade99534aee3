"""The service in a process where torch and transformers cannot be imported (the serving install)."""

import json
import subprocess
import sys
import textwrap

BLOCK_TORCH = textwrap.dedent(
    """
    import sys
    for name in ("torch", "transformers", "optimum"):
        sys.modules[name] = None  # any import of them now raises ImportError
    """
)


def test_the_service_serves_a_package_without_torch(onnx_package) -> None:
    script = BLOCK_TORCH + textwrap.dedent(
        f"""
        import json, time
        from fastapi.testclient import TestClient
        from sentiment_api.core.settings import Settings
        from sentiment_api.serving import create_app
        app = create_app(Settings(model={str(onnx_package)!r}, threads=1))
        with TestClient(app) as client:
            end = time.monotonic() + 60
            while client.get("/readyz").status_code != 200:
                assert time.monotonic() < end, "not ready within 60 s"
                time.sleep(0.05)
            answer = client.post("/predict", json={{"text": "I love my #iPad"}})
        print(json.dumps([answer.status_code, sorted(m for m in sys.modules
              if m.split(".")[0] in ("torch", "transformers") and sys.modules[m] is not None)]))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == [200, []]
