"""What ``predict`` can be told: the documented fields its command-line options are made from."""

from __future__ import annotations

from pydantic import BaseModel, Field

from sentiment_api.core.devices import DeviceChoice, stream_layout
from sentiment_api.data.formats import InputFormat, OutputFormat


class PredictOptions(BaseModel):
    """How files are read, scored and written by batch prediction."""

    def stream_layout(self) -> tuple[int, int]:
        """Streams and ONNX Runtime threads per stream: one single-threaded stream per core unless set."""
        return stream_layout(self.streams, self.threads)

    text_column: str | None = Field(
        None, description="Column holding the text (default: the first of tweet_text, Tweet, text, tweet)."
    )
    sheet: str | None = Field(None, description="Sheet of an Excel input (default: the first).")
    input_format: InputFormat | None = Field(
        None, description="Format of the input files (default: from their suffix)."
    )
    output_format: OutputFormat | None = Field(
        None,
        description="Format of the output (default: from its suffix; a directory gets Parquet part files).",
    )
    batch_size: int = Field(
        32,
        ge=1,
        le=4096,
        description="Texts per inference call, grouped by length. Packages give a row the same scores "
        "whatever it is batched with (their int8 scheme is batch-invariant), so --ray and resumed runs "
        "repeat them to the digit.",
    )
    chunk_rows: int = Field(
        1024, ge=1, le=1_000_000, description="Rows read, scored and written at a time; memory grows with it."
    )
    part_rows: int = Field(
        100_000,
        ge=1,
        description="Rows per part file: an interrupted run resumes after the last complete part.",
    )
    max_text_chars: int = Field(
        1000, ge=1, description="Longer texts are not scored; their rows are kept, marked with the reason."
    )
    column_prefix: str = Field(
        "", description="Put before the names of the added columns (label, score, ...), e.g. pred_."
    )
    min_score: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Add an abstained column: true where the best score is below this (the server's "
        "min_score, for a whole file); the label and scores are kept.",
    )
    streams: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Sessions scoring slices of each chunk at once, as the server's streams (default: one "
        "per core).",
    )
    threads: int | None = Field(
        None, ge=1, description="ONNX Runtime threads per stream (default: cores / streams)."
    )
    device: DeviceChoice = Field(
        "cpu",
        description="cpu; cuda, an NVIDIA GPU (a package for it, e.g. onnx-fp16, and the gpu extra); or "
        "auto, the GPU when one is usable and the package is for it. Without --ray only.",
    )
    overwrite: bool = Field(
        False, description="Replace the part files of an earlier run with other settings or input."
    )
    progress: bool = Field(True, description="Show rows, rows/s and the time left.")


class RayOptions(BaseModel):
    """Where batch prediction runs when one machine is not enough: Ray Data, locally or on a cluster."""

    ray: bool = Field(
        False,
        description="Run on Ray Data: a local Ray on this machine, or the cluster of --ray-address or "
        "RAY_ADDRESS (inside a RayJob).",
    )
    ray_address: str | None = Field(
        None, description="Join this Ray cluster (ray://HOST:10001, or auto); implies --ray."
    )
    ray_actors: int | None = Field(
        None,
        ge=1,
        description="Model copies (Ray actors); default: from one up to as many as the cluster's CPUs "
        "hold at --ray-actor-cpus each.",
    )
    ray_actor_cpus: int = Field(1, ge=1, description="CPUs each actor reserves: its ONNX Runtime threads.")

    @property
    def enabled(self) -> bool:
        """Whether Ray was asked for at all."""
        return self.ray or self.ray_address is not None
