"""Which device a model runs on: what was asked for, what the model is for, what this machine has.

``cpu`` and ``cuda`` are devices; ``auto`` is a choice between them, made here when a model is loaded:
the first device the model is for that this machine can run it on. Asking for ``cuda`` where it
cannot work is one :class:`DeviceError` naming everything that is missing and how to install it;
only ``auto`` ever settles for the CPU.

Nothing here starts CUDA: a GPU is seen by its device files and a runtime by how it was built, so the
CLI can check a setting before the server forks its workers (a process that forked after CUDA
started cannot use the GPU). Whether CUDA really starts is checked where the model is loaded
(``engine.py``).
"""

from __future__ import annotations

import glob
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

from sentiment_api.core.errors import DeviceError
from sentiment_api.core.extras import install_command

Device = Literal["cpu", "cuda"]
DeviceChoice = Literal["cpu", "cuda", "auto"]
Runtime = Literal["onnxruntime", "torch"]
CudaPrecision = Literal["float16", "bfloat16"]
CUDA_PROVIDER = "CUDAExecutionProvider"
TENSORRT_PROVIDER = "TensorrtExecutionProvider"
# onnxruntime and onnxruntime-gpu install the same module: the CPU build must go before the GPU build
GPU_INSTALL = f"pip uninstall -y onnxruntime && {install_command('gpu')}"
TORCH_CUDA_INSTALL = "install a CUDA build of torch (https://pytorch.org/get-started/locally/)"


@dataclass(frozen=True)
class CudaProbe:
    """What this machine offers a model on CUDA, found without starting CUDA.

    ``gpus``: NVIDIA device files (``/dev/nvidia0``, ...), which a container sees only when it was
    given a GPU. ``runtime_problem``: why the runtime cannot run on CUDA at all (a CPU build), or
    ``None``.
    """

    runtime: Runtime
    gpus: int
    runtime_problem: str | None

    @classmethod
    def here(cls, runtime: Runtime) -> CudaProbe:
        """Probe this machine for ``runtime``."""
        gpus = len(glob.glob("/dev/nvidia[0-9]*"))
        problem = _onnxruntime_problem() if runtime == "onnxruntime" else _torch_problem()
        return cls(runtime, gpus, problem)

    def problems(self) -> list[str]:
        """Everything that stops a model on CUDA here, one phrase each; empty when nothing does."""
        found = [] if self.gpus else ["no NVIDIA GPU is visible here (no /dev/nvidia0)"]
        if self.runtime_problem:
            found.append(self.runtime_problem)
        return found


def onnxruntime_providers() -> list[str]:
    """ONNX Runtime's execution providers in this install (empty when it is not installed)."""
    try:
        import onnxruntime
    except ImportError:
        return []
    providers: list[str] = onnxruntime.get_available_providers()
    return providers


def _onnxruntime_problem() -> str | None:
    providers = onnxruntime_providers()
    if CUDA_PROVIDER in providers:
        return None
    if not providers:
        return f"ONNX Runtime is not installed; install its GPU build with: {GPU_INSTALL}"
    return (
        f"ONNX Runtime here has no {CUDA_PROVIDER} (it has {', '.join(providers)}: the CPU build); "
        f"install the GPU build with: {GPU_INSTALL}"
    )


def _torch_problem() -> str | None:
    try:
        import torch
    except ImportError:
        return f"PyTorch is not installed ({install_command('train')}); then {TORCH_CUDA_INSTALL}"
    version: Any = torch.version
    if version.cuda is None:
        return f"PyTorch {torch.__version__} here is a CPU build; {TORCH_CUDA_INSTALL}"
    return None


def choose_device(
    requested: DeviceChoice,
    supported: Sequence[Device],
    runtime: Runtime,
    what: str = "the model",
    probe: CudaProbe | None = None,
) -> Device:
    """The device to run on: ``requested``, or for ``auto`` the first of ``supported`` that works here.

    ``supported``: the devices the model is for, in order of preference (its card says). A device
    the model is not for, or ``cuda`` where this machine cannot run it, is a :class:`DeviceError`.
    """
    if requested == "auto":
        if "cuda" in supported and not (probe or CudaProbe.here(runtime)).problems():
            return "cuda"
        if "cpu" in supported:
            return "cpu"
        requested = "cuda"  # a GPU-only model: say why it cannot run here
    if requested not in supported:
        hint = (
            "export an fp16 package for a GPU (sentiment-api export CHECKPOINT --variant onnx-fp16)"
            if requested == "cuda"
            else "choose another package"
        )
        raise DeviceError(
            f"{what} is for {' and '.join(supported)} only, not {requested}: {hint}, or set the device "
            f"(--device, SENTIMENT_DEVICE) to {supported[0]}"
        )
    if requested == "cuda":
        problems = (probe or CudaProbe.here(runtime)).problems()
        if problems:
            raise DeviceError(f"device cuda asked for, but {'; and '.join(problems)}")
    return requested


# The x86 extensions with an exact 8-bit dot product (32-bit sums): without one, ONNX Runtime's
# uint8 x int8 products run on AVX2's ``vpmaddubsw``, which saturates (``rowwise.exact_int8``).
INT8_DOT_PRODUCT = ("avx512_vnni", "avx_vnni", "amx_int8")


@dataclass(frozen=True)
class Cpu:
    """This machine's CPU: its model name and flags, as ``/proc/cpuinfo`` gives them."""

    model: str
    flags: frozenset[str]

    @property
    def int8_flags(self) -> list[str]:
        """The flags that decide int8 speed (VNNI, AMX), or AVX2 and AVX-512 where there are none."""
        return sorted(f for f in self.flags if f.startswith(("avx512_vnni", "avx_vnni", "amx"))) or sorted(
            f for f in self.flags if f in ("avx2", "avx512f", "avx512bw")
        )

    @property
    def emulates_bf16(self) -> bool:
        """Whether bf16 arithmetic is emulated here: an x86 CPU without AVX512-BF16 or AMX-BF16."""
        return self._x86 and bool(self.flags) and not {"avx512_bf16", "amx_bf16"} & self.flags

    @property
    def _x86(self) -> bool:
        return platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")

    @property
    def saturates_int8(self) -> bool:
        """Whether uint8 x int8 products can saturate here: an x86 CPU without an int8 dot product."""
        return self._x86 and bool(self.flags) and not any(f in self.flags for f in INT8_DOT_PRODUCT)


@cache
def this_cpu() -> Cpu:
    """The CPU this process runs on (read once)."""
    model, flags = platform.processor() or "unknown", frozenset[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return Cpu(model, flags)


SpinMode = Literal["never", "while_running", "always"]


def spin_mode(spin: bool | SpinMode) -> SpinMode:
    """``True`` is ``always`` and ``False`` ``never`` (see :class:`OnnxBackend`)."""
    if spin is True:
        return "always"
    if spin is False:
        return "never"
    return spin


def stream_layout(streams: int | None, threads: int | None, cores: int | None = None) -> tuple[int, int]:
    """Streams (batches run at once) and ONNX Runtime threads per stream, ``None`` meaning unset: by
    default one single-threaded stream per core; with only one of the two set, the other shares the
    ``cores`` (default: this machine's) out among them, never below one."""
    cores = cores or os.cpu_count() or 1
    streams = streams or max(1, cores // (threads or 1))
    return streams, threads or max(1, cores // streams)
