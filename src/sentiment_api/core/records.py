"""The records other records are made of: how data was read, which corpora, what the gate held.

They sit below every step that reads or writes them (data, training, the gate, the model card), so
that a record can be loaded without importing the code that produced it.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from sentiment_api.core.metrics import Scores
from sentiment_api.core.text import DEFAULT_NORMALISER


class DataSpec(BaseModel):
    """How a labelled file becomes train, validation and test rows; recorded in every model card."""

    sheet: str | None = Field("Train", description="Sheet to read from an Excel file (ignored for CSV).")
    text_column: str = Field("tweet_text", description="Column holding the tweet text.")
    label_column: str = Field(
        "is_there_an_emotion_directed_at_a_brand_or_product",
        description="Column holding the label.",
    )
    labels: list[str] | None = Field(
        None,
        description="Labels to keep (any other label is an error naming its row); by default every "
        "label found, less the dropped ones.",
    )
    drop_labels: list[str] = Field(
        default_factory=lambda: ["I can't tell"],
        description="Labels whose rows are dropped on purpose (any other unknown label is an error).",
    )
    drop_empty: bool = Field(True, description="Drop rows without text (else they are an error).")
    normaliser: str = Field(DEFAULT_NORMALISER, description="Text normaliser, `name@version`.")
    near_duplicate_threshold: float = Field(
        80.0,
        ge=0,
        le=100,
        description="Drop a row whose rapidfuzz ratio to an earlier kept row exceeds this "
        "(100 keeps every row).",
    )
    holdout: float = Field(0.2, description="Share held out, then halved into validation and test.")
    seed: int = Field(42, description="Random state of the stratified splits.")


class CorpusSpec(BaseModel):
    """Where an extra corpus is, which columns hold text and label, how its labels map onto ours."""

    model_config = ConfigDict(extra="forbid")

    path: Path = Field(description="The corpus' training file (.csv or .xlsx).")
    validation: Path | None = Field(
        None, description="Its validation file; without one, a stratified share of the corpus is held out."
    )
    name: str | None = Field(None, description="A name for the card (default: the file's directory name).")
    sheet: str | None = Field(None, description="Excel sheet (default: the first).")
    text_column: str = Field("text", description="Column holding the text.")
    label_column: str = Field("label", description="Column holding the label.")
    label_map: dict[str, str] = Field(
        default_factory=dict,
        description="Corpus label -> target label. Labels without an entry must already be target labels.",
    )
    drop_labels: list[str] = Field(default_factory=list, description="Corpus labels whose rows are dropped.")
    holdout: float = Field(0.05, gt=0, lt=1, description="Share held out for validation without a file.")
    max_rows: int | None = Field(None, ge=1, description="Use at most this many training rows (a sample).")

    @property
    def display_name(self) -> str:
        """The name given, else the directory holding the file (``tweeteval-sentiment``)."""
        return self.name or self.path.resolve().parent.name or self.path.stem


class CorpusRecord(BaseModel):
    """What the model card says of a corpus a model learnt from."""

    name: str
    file: str
    sha256: str
    validation_file: str | None = None
    validation_sha256: str | None = None
    rows: int = Field(description="Training rows used (after cleaning).")
    validation_rows: int = 0
    label_map: dict[str, str] = Field(default_factory=dict)
    dropped: dict[str, int] = Field(default_factory=dict)
    mode: str = Field(
        "stage", description="stage: a first stage on the corpora (older cards may say mix or joint)."
    )
    epochs: int = Field(0, description="Passes over the corpus in the first stage.")
    stage_checkpoint: str | None = Field(None, description="The first-stage checkpoint.")
    stage_metrics: Scores | None = Field(
        None, description="The first-stage checkpoint's scores on the corpus' validation split."
    )
    metrics: Scores | None = Field(
        None, description="This model's scores on the corpus' validation split (labels mapped)."
    )


class GateThresholds(BaseModel):
    """What an exported model must keep to be accepted."""

    max_probability_diff: float = Field(
        1e-4, description="Largest |Δp| allowed between fp32 ONNX and PyTorch."
    )
    parity_samples: int = Field(256, ge=1, description="Validation tweets compared for that parity check.")
    min_label_agreement: float = Field(
        0.98, description="Smallest share of validation labels int8 must agree on with fp32."
    )
    max_macro_f1_drop: float = Field(
        0.01, description="Largest drop of validation macro-F1 from fp32 to int8."
    )
    max_batch_probability_diff: float = Field(
        1e-3,
        description="Largest |Δp| of a validation tweet between running alone and inside a padded "
        "batch of random others (the packaged model); any label flip fails too.",
    )
    invariance_samples: int = Field(200, ge=1, description="Validation tweets checked for batch invariance.")
    fp16_max_probability_diff: float = Field(
        1e-2, description="Largest |Δp| allowed between fp16 and fp32 ONNX on the validation split."
    )
    fp16_min_label_agreement: float = Field(
        0.99, description="Smallest share of validation labels fp16 must agree on with fp32."
    )


class GateReport(BaseModel):
    """The gate's figures and verdict; a figure is ``None`` when its variant was not built."""

    thresholds: GateThresholds = Field(default_factory=GateThresholds)
    failures: list[str] = Field(default_factory=list, description="Why the gate failed, one line each.")
    passed: bool = True
    override: bool = Field(False, description="Packaged although it failed (--accept-gate-failure).")
    onnx_vs_pytorch_max_probability_diff: float | None = None
    onnx_optimised_vs_pytorch_max_probability_diff: float | None = Field(
        None,
        # cards written before the card was typed spelled the variant with its hyphen
        validation_alias=AliasChoices(
            "onnx_optimised_vs_pytorch_max_probability_diff", "onnx-optimised_vs_pytorch_max_probability_diff"
        ),
    )
    int8_vs_fp32_label_agreement: float | None = None
    fp32_validation_macro_f1: float | None = None
    int8_validation_macro_f1: float | None = None
    int8_macro_f1_drop: float | None = None
    batch_invariance_max_probability_diff: float | None = Field(
        None, description="Largest |Δp| of a tweet alone against inside padded batches of others."
    )
    batch_invariance_label_flips: int | None = Field(
        None, description="Tweets whose label changed between alone and inside a batch."
    )
    fp16_vs_fp32_max_probability_diff: float | None = None
    fp16_vs_fp32_label_agreement: float | None = None

    def figures(self) -> dict[str, float]:
        """The measured figures, without thresholds, verdict or the ones not measured."""
        skip = {"thresholds", "failures", "passed", "override"}
        return {k: v for k, v in self.model_dump(exclude=skip).items() if v is not None}
