"""The ONNX engine in a process where torch and transformers cannot be imported."""

import json
import subprocess
import sys
import textwrap

import pytest

BLOCK_TORCH = textwrap.dedent(
    """
    import sys
    for name in ("torch", "transformers", "optimum"):
        sys.modules[name] = None  # any import of them now raises ImportError
    """
)


@pytest.fixture(scope="module")
def int8_package(trained_tiny_bert, tiny_csv, tmp_path_factory):
    from sentiment_api.optimise.export import build_package

    out = tmp_path_factory.mktemp("package") / "int8"
    build_package(trained_tiny_bert, out, tiny_csv, log=lambda _: None)
    return out


def test_onnx_package_predicts_without_torch(int8_package) -> None:
    script = BLOCK_TORCH + textwrap.dedent(
        f"""
        import json
        from sentiment_api.core.engine import Classifier
        classifier = Classifier.load({str(int8_package)!r}, threads=1)
        predictions = classifier.predict(["I love my #iPad", "x " * 500], top_k=3)
        print(json.dumps([[p.labels, p.scores, p.truncated] for p in predictions]))
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers")
                                and sys.modules[m] is not None)))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    predictions, imported = (json.loads(line) for line in result.stdout.splitlines())
    assert imported == []
    assert [p[2] for p in predictions] == [False, True]
    assert all(abs(sum(p[1]) - 1) < 1e-5 for p in predictions)


def test_checkpoint_without_torch_names_the_extra(trained_tiny_bert) -> None:
    script = BLOCK_TORCH + textwrap.dedent(
        f"""
        from sentiment_api.core.engine import Classifier
        from sentiment_api.core.errors import DependencyError
        try:
            Classifier.load({str(trained_tiny_bert)!r})
        except DependencyError as exc:
            print(exc)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr  # any other error fails the script
    assert "pip install 'sentiment-api[train]'" in result.stdout
