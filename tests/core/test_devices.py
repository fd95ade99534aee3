"""Device selection: cpu, cuda or auto; what a package is for; one clear line when cuda cannot work.

This machine has no NVIDIA GPU and ONNX Runtime's CPU build, so asking for cuda must be refused here,
naming both, and auto must run on the CPU. ``CudaProbe`` stands for a machine that has what this one
lacks, so that the choices a GPU machine makes are checked here too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sentiment_api.core.devices import CudaProbe, choose_device
from sentiment_api.core.engine import Classifier, OnnxBackend, device_for, execution_providers
from sentiment_api.core.errors import ConfigError, DeviceError
from sentiment_api.optimise.export import build_package

GPU_MACHINE = CudaProbe("onnxruntime", gpus=1, runtime_problem=None)
CPU_BUILD = "ONNX Runtime here has no CUDAExecutionProvider (the CPU build)"


@pytest.fixture(scope="module")
def fp16_package(trained_tiny_bert: Path, tiny_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fp16") / "package"
    build_package(trained_tiny_bert, out, tiny_csv, variant="onnx-fp16", log=lambda _: None)
    return out


@pytest.fixture
def no_cuda_here() -> None:
    if not CudaProbe.here("onnxruntime").problems():
        pytest.skip("this machine can run ONNX Runtime on CUDA")


def test_cuda_without_gpu_or_provider_is_one_line_naming_what_is_missing(fp16_package, no_cuda_here) -> None:
    with pytest.raises(DeviceError) as raised:
        Classifier.load(fp16_package, device="cuda")

    message = str(raised.value)
    assert isinstance(raised.value, ConfigError)
    assert "\n" not in message
    assert message.startswith("device cuda asked for, but ")
    assert "pip uninstall -y onnxruntime && pip install 'sentiment-api[gpu]'" in message
    if not Path("/dev/nvidia0").exists():
        assert "no NVIDIA GPU is visible here" in message


def test_auto_runs_on_the_cpu_where_cuda_cannot_work(fp16_package, onnx_package, no_cuda_here) -> None:
    fp16 = Classifier.load(fp16_package, device="auto")

    assert fp16.device == "cpu"
    assert fp16.predict(["love the new ipad"])[0].label in fp16.labels
    assert Classifier.load(onnx_package, device="auto").device == "cpu"


def test_an_int8_package_is_refused_on_cuda_whatever_the_machine(onnx_package) -> None:
    with pytest.raises(DeviceError, match=r"\(onnx-int8\) is for cpu only, not cuda: export an fp16 package"):
        Classifier.load(onnx_package, device="cuda")
    # and on a machine with a GPU and the GPU build of ONNX Runtime too: the package decides first
    with pytest.raises(DeviceError, match="is for cpu only"):
        choose_device("cuda", ["cpu"], "onnxruntime", probe=GPU_MACHINE)
    assert choose_device("auto", ["cpu"], "onnxruntime", probe=GPU_MACHINE) == "cpu"


def test_on_a_gpu_machine_auto_and_cuda_choose_the_gpu() -> None:
    assert choose_device("auto", ["cuda", "cpu"], "onnxruntime", probe=GPU_MACHINE) == "cuda"
    assert choose_device("cuda", ["cuda", "cpu"], "onnxruntime", probe=GPU_MACHINE) == "cuda"
    assert choose_device("cpu", ["cuda", "cpu"], "onnxruntime", probe=GPU_MACHINE) == "cpu"


def test_a_gpu_without_the_gpu_build_names_only_the_build() -> None:
    probe = CudaProbe("onnxruntime", gpus=1, runtime_problem=CPU_BUILD)

    with pytest.raises(DeviceError) as raised:
        choose_device("cuda", ["cuda", "cpu"], "onnxruntime", probe=probe)

    assert str(raised.value) == f"device cuda asked for, but {CPU_BUILD}"
    assert choose_device("auto", ["cuda", "cpu"], "onnxruntime", probe=probe) == "cpu"


def test_a_checkpoint_on_cuda_needs_a_cuda_build_of_torch(trained_tiny_bert) -> None:
    import torch

    if torch.version.cuda is not None:
        pytest.skip("this torch is a CUDA build")
    with pytest.raises(DeviceError, match=r"PyTorch .* here is a CPU build; install a CUDA build of torch"):
        Classifier.load(trained_tiny_bert, device="cuda")
    assert Classifier.load(trained_tiny_bert, device="auto").device == "cpu"


def test_the_cli_checks_the_device_before_serving_or_predicting(onnx_package, tmp_path) -> None:
    (tmp_path / "in.csv").write_text("text\nlove it\n")
    for args in (
        ["serve", "--model", onnx_package, "--device", "cuda", "--port", "8765"],
        ["predict", onnx_package, "--input", tmp_path / "in.csv", "--output", tmp_path / "out.csv",
         "--device", "cuda"],
    ):  # fmt: skip
        result = subprocess.run(
            [sys.executable, "-m", "sentiment_api", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 1, result.stderr
        assert result.stderr.count("\n") == 1
        assert result.stderr.startswith("error: ") and "is for cpu only, not cuda" in result.stderr
    assert not (tmp_path / "out.csv").exists()


def test_device_for_checks_without_loading(onnx_package) -> None:
    assert device_for(onnx_package, "cpu") == "cpu"
    assert device_for(onnx_package, "auto") == "cpu"


def test_cpu_sessions_use_only_the_cpu_provider_and_tensorrt_needs_a_gpu(onnx_package) -> None:
    assert execution_providers("cpu") == ["CPUExecutionProvider"]
    assert OnnxBackend(onnx_package / "model.onnx").session.get_providers() == ["CPUExecutionProvider"]
    with pytest.raises(DeviceError, match="TensorRT runs on a GPU"):
        execution_providers("cpu", tensorrt=True)
    cuda = execution_providers("cuda", tensorrt=True, max_length=64)
    assert [p if isinstance(p, str) else p[0] for p in cuda] == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert cuda[0][1]["trt_profile_max_shapes"] == "input_ids:1024x64,attention_mask:1024x64"
