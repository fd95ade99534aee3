"""The service's settings: one object, read from ``SENTIMENT_*`` environment variables.

Every field is documented where it is declared; ``sentiment-api serve --help`` and the README point
here. Validators refuse values that cannot work or would be unsafe, with a message that says which
variable to change.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .devices import CudaPrecision, Device, DeviceChoice
from .engine import SpinMode, spin_mode
from .errors import ConfigError

MIN_API_KEY_CHARS = 16
# What the batching settings default to on a GPU, where one inference call costs about the same for 1
# and for 100 tweets: fewer, larger calls, and tokenisation on threads of its own so that the next
# batch is ready when the GPU is free. Two streams: one batch is copied and answered while another runs.
GPU_DEFAULTS: dict[str, int] = {
    "max_batch_size": 128,
    "bucket_size": 64,
    "token_budget": 32_768,
    "streams": 2,
    "tokenizer_threads": 4,
}


def default_model_dir() -> Path:
    """The model package shipped inside the installed library."""
    return Path(__file__).resolve().parent / "models" / "default"


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """How the HTTP service runs: model, network, batching, limits, security, logs, shutdown."""

    model_config = SettingsConfigDict(env_prefix="SENTIMENT_", extra="forbid", validate_default=True)

    # --- model and processes
    model: Path = Field(
        default_factory=default_model_dir,
        description="Model package directory (model.onnx, tokenizer.json, model_card.json).",
    )
    host: str = Field("127.0.0.1", description="Address to listen on; 0.0.0.0 for every interface.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port to listen on.")
    workers: int = Field(1, ge=1, le=64, description="Server processes; each loads its own model copy.")
    reuse_port: bool = Field(
        True,
        description="With several workers, give each its own listening socket on the port (SO_REUSEPORT, "
        "Linux), so the kernel spreads new connections evenly over them; off, they share one socket and "
        "the worker that wakes first takes most.",
    )
    event_loop: Literal["asyncio", "uvloop"] = Field(
        "asyncio",
        description="The event loop: asyncio accepts every waiting connection at each turn; uvloop (libuv) "
        "accepts one, so under overload new connections wait seconds in the kernel's queue.",
    )
    streams: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Batches each process runs at once, each on its own inference thread (default: one "
        f"per core; {GPU_DEFAULTS['streams']} on a GPU). A batch is formed and answered while others "
        "run, and single-threaded runs need no "
        "hand-offs between threads. Every worker gets one per core, not a share: connections are spread "
        "over workers by chance (21/11 of 32 happens), so a busy one must be able to use the cores an "
        "idle one leaves. "
        "STREAMS=1 with THREADS=2 answers a lone request sooner; more streams serve more requests per "
        "second (both measured in BENCHMARKS.md).",
    )
    threads: int | None = Field(
        None,
        ge=1,
        le=256,
        description="ONNX Runtime threads per stream (default: cores / streams).",
    )
    solo_threads: int | None = Field(
        None,
        ge=0,
        le=256,
        description="ONNX Runtime threads for a batch that arrives while every stream is idle and "
        "nothing else waits (default: every core; 0 or 1 turns it off). Light traffic then gets every "
        "core and answers sooner; under load the streams take over (measured in BENCHMARKS.md).",
    )
    spin: SpinMode = Field(
        "while_running",
        description="When ONNX Runtime's worker threads busy-wait for work rather than sleep: "
        "while_running (between the ops of a run, stopping as it returns: a lone request on every "
        "core is not slowed by waking threads once per op, and an idle server burns nothing), always "
        "(between requests too: CPU burnt while idle; true is accepted) or never (false).",
    )

    # --- device
    device: DeviceChoice = Field(
        "cpu",
        description="Where the model runs: cpu; cuda, an NVIDIA GPU, which needs a package for it "
        "(onnx-fp16; int8 packages are for the CPU only) and the gpu extra, and is an error naming "
        "what is missing otherwise; auto, the GPU when one is present and usable and the package is "
        "for it, else the CPU. On a GPU the batching settings left unset get larger defaults (README, GPUs).",
    )
    cuda_precision: CudaPrecision = Field(
        "float16",
        description="Weights and arithmetic of a PyTorch checkpoint on a GPU (ONNX packages carry their "
        "own): float16, or bfloat16 (same range as fp32, fewer digits).",
    )
    tensorrt: bool = Field(
        False,
        description="On a GPU, run ONNX packages with ONNX Runtime's TensorRT provider (in fp16) ahead of "
        "CUDA: faster once its engines are built, which takes minutes at the first start (they are cached "
        "in the temporary directory). Needs TensorRT 10; an error where it cannot start.",
    )
    tokenizer_threads: int | None = Field(
        None,
        ge=0,
        le=64,
        description="Threads that tokenise requests off the event loop, in parallel with inference (the "
        "tokenizer releases the GIL); 0 tokenises on the event loop. Default: 0 on the CPU, where "
        f"inference needs every core; {GPU_DEFAULTS['tokenizer_threads']} on a GPU.",
    )

    # --- batching and back-pressure
    max_batch_size: int = Field(
        12,
        ge=1,
        le=1024,
        description="Most texts in one inference call. Small batches keep every stream busy and the "
        "slowest answers quick (measured: 12 against 32 at 32 connections, two streams). "
        f"{GPU_DEFAULTS['max_batch_size']} on a GPU.",
    )
    bucket_size: int = Field(
        8,
        ge=1,
        le=1024,
        description="Texts per ONNX Runtime run inside a batch: a batch is sorted by length and run in "
        "buckets of this size, so short tweets are not padded to the longest one (measured: 420 -> 608 "
        f"tweets/s for arrival-order batches of 32). {GPU_DEFAULTS['bucket_size']} on a GPU.",
    )
    max_wait_ms: float = Field(
        2.0,
        ge=0.0,
        le=1000.0,
        description="How long a batch may wait to fill, once traffic shows requests arrive together.",
    )
    token_budget: int = Field(
        8192,
        ge=16,
        le=1_000_000,
        description="Most input tokens (summed over texts) in one inference call. "
        f"{GPU_DEFAULTS['token_budget']} on a GPU.",
    )
    queue_size: int = Field(
        512, ge=1, le=1_000_000, description="Most texts waiting for inference; beyond it requests get 429."
    )
    max_queue_wait_ms: float = Field(
        500.0,
        gt=0.0,
        le=600_000.0,
        description="Longest the texts already queued may take to infer, at the speed measured on recent "
        "batches; a request arriving behind more gets 429 at once. Under overload this keeps latency "
        "bounded and refuses quickly rather than queueing until the deadline.",
    )
    queue_timeout_ms: float = Field(
        2000.0,
        gt=0.0,
        le=600_000.0,
        description="Longest a request may wait for inference once accepted; past it the answer is 503 "
        "with Retry-After rather than a late one. MAX_QUEUE_WAIT_MS keeps this rare: it is for a burst "
        "accepted before the queue was seen to drain slowly.",
    )
    request_timeout_s: float = Field(
        10.0, gt=0.0, le=600.0, description="Per-request deadline in seconds; past it the answer is 503."
    )

    # --- connections
    max_connections: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Most open connections (or requests in progress) per worker process; a request "
        "arriving beyond it gets 503 at once and its connection is closed. Raise the open-files limit "
        "(ulimit -n) with it.",
    )
    read_timeout_s: float = Field(
        10.0,
        gt=0.0,
        le=600.0,
        description="Seconds a client has to send a request's line and headers (from connecting, or from "
        "the request's first byte), and again its body; past either, 408 and the connection is closed "
        "(a new connection that sends nothing is closed without an answer).",
    )
    keep_alive_s: int = Field(
        5, ge=1, le=3600, description="Seconds an idle keep-alive connection is kept open between requests."
    )
    max_header_bytes: int = Field(
        16_384,
        ge=1024,
        le=1 << 20,
        description="Largest request line plus headers in bytes; beyond it 431 and the connection is closed.",
    )

    # --- input limits
    max_text_chars: int = Field(1000, ge=1, le=100_000, description="Most characters in one text.")
    max_batch_texts: int = Field(64, ge=1, le=10_000, description="Most texts in one batch request.")
    max_body_bytes: int = Field(
        1 << 20, ge=1024, le=64 << 20, description="Largest request body in bytes; beyond it 413."
    )

    # --- security
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Accepted API keys, comma-separated; none means no authentication. Never logged.",
    )
    api_keys_file: Path | None = Field(
        None, description="File with one accepted API key per line (added to api_keys)."
    )
    rate_limit_per_s: float | None = Field(
        None, gt=0.0, description="Requests per second allowed per client (API key, else address)."
    )
    rate_limit_burst: int = Field(20, ge=1, description="Requests a client may send at once before limiting.")
    auth_failure_limit: int = Field(
        10,
        ge=1,
        le=1_000_000,
        description="Failed authentications (missing or unknown key) a client address may make per "
        "auth_failure_window_s; past them every request from that address gets 429 with Retry-After "
        "until the window gives it another try. Counted by the whole instance, whatever the workers.",
    )
    auth_failure_window_s: float = Field(
        60.0, gt=0.0, le=86_400.0, description="The window of auth_failure_limit, in seconds."
    )
    forwarded_allow_ips: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["127.0.0.1"],
        description="Proxies (addresses, CIDR ranges, or *) trusted to name the client in "
        "X-Forwarded-For; the rate limits then count that client, not the proxy. Comma-separated.",
    )
    state_dir: Path | None = Field(
        None,
        description="Directory for the limits' state that the worker processes share (an SQLite file); "
        "a fresh temporary one when workers > 1; in memory with one worker.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Origins allowed by CORS, comma-separated; none turns CORS off."
    )

    # --- observability
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    log_text: bool = Field(False, description="Include the request text in the request log line.")
    otlp_endpoint: str | None = Field(
        None, description="OTLP/HTTP traces endpoint (http://host:4318); tracing is off without it."
    )
    service_name: str = Field("sentiment-api", description="Service name in traces and logs.")
    metrics_dir: Path | None = Field(
        None,
        description="Prometheus multiprocess directory; a fresh temporary one when workers > 1 or "
        "metrics_port is set.",
    )
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Serve /metrics on this port, without a key, for Prometheus on a private network, and "
        "not on the public port. Unset: /metrics on the public port, behind the API keys when keys are set.",
    )

    # --- pages and shutdown
    docs: bool = Field(True, description="Serve /docs (Swagger UI, local assets) and /ui.")
    drain_s: float = Field(
        2.0, ge=0.0, le=300.0, description="After SIGTERM, seconds /readyz answers 503 before closing."
    )
    shutdown_grace_s: float = Field(
        10.0, gt=0.0, le=600.0, description="After draining, seconds in-flight requests get to finish."
    )

    @field_validator("spin", mode="before")
    @classmethod
    def _spin_as_boolean(cls, value: object) -> object:
        """SPIN=true and SPIN=false, from before spinning had three modes (``spin_mode`` maps them)."""
        if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on"):
            value = True
        elif isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off"):
            value = False
        return spin_mode(value) if isinstance(value, bool) else value

    @field_validator("api_keys", "cors_origins", "forwarded_allow_ips", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("api_keys")
    @classmethod
    def _strong_keys(cls, keys: list[SecretStr]) -> list[SecretStr]:
        return _check_keys(keys)

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"CORS origin {origin!r} must be '*' or start with http:// or https://")
        return origins

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxies(cls, proxies: list[str]) -> list[str]:
        for proxy in proxies:
            if proxy == "*":
                continue
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(
                    f"forwarded_allow_ips: {proxy!r} is not an address, a CIDR range or *"
                ) from None
        return proxies

    @field_validator("otlp_endpoint")
    @classmethod
    def _endpoint(cls, endpoint: str | None) -> str | None:
        if endpoint and not endpoint.startswith(("http://", "https://")):
            raise ValueError("SENTIMENT_OTLP_ENDPOINT must be an http:// or https:// URL")
        return endpoint or None

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.api_keys_file is not None:
            self.api_keys = self.api_keys + _read_keys(self.api_keys_file)
        if self.queue_size < self.max_batch_texts:
            raise ValueError(
                f"queue_size ({self.queue_size}) must hold one full batch request "
                f"(max_batch_texts = {self.max_batch_texts})"
            )
        if "*" in self.cors_origins and self.api_keys:
            raise ValueError("CORS origin '*' with API keys would let any web page use a leaked key")
        if self.metrics_port is not None and self.metrics_port == self.port:
            raise ValueError(f"metrics_port ({self.metrics_port}) must differ from port")
        return self

    def for_device(self, device: Device) -> Settings:
        """These settings on ``device`` (what ``auto`` turned out to be): on ``cuda``, every setting of
        ``GPU_DEFAULTS`` not given explicitly (option or variable) takes its GPU default."""
        update: dict[str, object] = {"device": device}
        if device == "cuda":
            update |= {
                name: value for name, value in GPU_DEFAULTS.items() if name not in self.model_fields_set
            }
        return self.model_copy(update=update)

    def tokenising_threads(self) -> int:
        """Threads that tokenise off the event loop (0: on the loop); the setting, or 0."""
        return self.tokenizer_threads or 0

    def inference_streams(self) -> int:
        """Batches each process runs at once: the setting, or one per core (per ``threads`` cores)."""
        return self.streams or max(1, (os.cpu_count() or 1) // (self.threads or 1))

    def inference_solo_threads(self) -> int:
        """Threads of a lone batch: the setting, or every core."""
        return (os.cpu_count() or 1) if self.solo_threads is None else self.solo_threads

    def inference_threads(self) -> int:
        """ONNX Runtime threads per stream: the setting, or the cores shared among the streams."""
        return self.threads or max(1, (os.cpu_count() or 1) // self.inference_streams())


def _read_keys(path: Path) -> list[SecretStr]:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise ValueError(f"cannot read the API keys file {path}: {exc.strerror}") from exc
    keys = [SecretStr(line.strip()) for line in lines if line.strip() and not line.startswith("#")]
    if not keys:
        raise ValueError(f"the API keys file {path} holds no key")
    return _check_keys(keys)


def _check_keys(keys: list[SecretStr]) -> list[SecretStr]:
    for key in keys:
        if len(key.get_secret_value()) < MIN_API_KEY_CHARS:
            raise ValueError(f"every API key needs at least {MIN_API_KEY_CHARS} characters")
    return keys


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, ``overrides`` winning; a bad value becomes one :class:`ConfigError`."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"SENTIMENT_{'_'.join(str(part) for part in error['loc']).upper() or 'SETTINGS'}: {error['msg']}"
            for error in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None
