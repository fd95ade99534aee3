"""Request and response bodies of the HTTP API.

Request models are built from the settings, so the OpenAPI document states the very limits the
service enforces (characters per text, texts per batch). Text rules that JSON Schema can only state
as a pattern (no control characters, not blank) use explicit character classes, the same in the
pattern and in the check, so a client's validator and the server agree on every string.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from sentiment_api.core.calibration import CalibrationRecord
from sentiment_api.core.metrics import Scores
from sentiment_api.core.model_card import PackageRecord
from sentiment_api.core.records import GateReport

MAX_TOP_K = 100
# C0 controls except tab, line feed and carriage return; DEL; C1 controls.
_CONTROL = r"\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F"
# Whitespace as JavaScript's \s knows it, spelled out so Python and JSON Schema tools agree.
_SPACE = r"\t\n\r\u000B\u000C \u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\uFEFF"
TEXT_PATTERN = rf"^[^{_CONTROL}]*[^{_CONTROL}{_SPACE}][^{_CONTROL}]*$"
_CONTROL_CHAR = re.compile(rf"[{_CONTROL}]")
_VISIBLE_CHAR = re.compile(rf"[^{_CONTROL}{_SPACE}]")


def check_text(text: str) -> str:
    """Refuse control characters (NUL included) and text that is only whitespace."""
    found = _CONTROL_CHAR.search(text)
    if found:
        raise PydanticCustomError(
            "control_character",
            "contains the control character U+{code} at position {position}; remove control characters",
            {"code": f"{ord(found.group()):04X}", "position": found.start()},
        )
    if not _VISIBLE_CHAR.search(text):
        raise PydanticCustomError("blank_text", "is empty or only whitespace; send some text")
    return text


def whole_number(value: object) -> object:
    """Take ``3.0`` as ``3``: JSON Schema counts it as an integer; anything else is left to strict checks."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def request_models(
    max_text_chars: int, max_batch_texts: int, explain_max_words: int = 64
) -> tuple[type[BaseModel], type[BaseModel]]:
    """The single and the batch request models, with these limits."""
    text_type = Annotated[
        str,
        Field(min_length=1, max_length=max_text_chars, json_schema_extra={"pattern": TEXT_PATTERN}),
        AfterValidator(check_text),
    ]
    top_k_type = Annotated[int, BeforeValidator(whole_number)]
    top_k_field = Field(
        1, ge=1, le=MAX_TOP_K, description="How many labels to return, best first; more than exist: all."
    )
    strict = ConfigDict(extra="forbid", strict=True)
    model_field = Field(
        None,
        min_length=1,
        max_length=64,
        description="Name of the model to ask (GET /models lists them); the default model when absent.",
    )

    class Options(BaseModel):
        """What a request may ask for beside the labels."""

        model_config = strict
        top_k: top_k_type = top_k_field
        model: str | None = model_field
        min_score: float | None = Field(
            None,
            ge=0.0,
            le=1.0,
            description='Below this best score the answer keeps its label and scores and adds "abstained": '
            "true (the server's min_score setting when absent).",
        )
        explain: bool = Field(
            False,
            description='Add "explanation": each word with its offsets and how much removing it lowers the '
            f"chosen label's probability; one model run per word, at most {explain_max_words} words a "
            "request, each counted in the rate limit.",
        )
        raw_scores: bool = Field(
            False, description='Add "raw_scores": every label\'s logit, before the softmax.'
        )

    class PredictRequest(Options):
        """One tweet to classify."""

        text: text_type = Field(description=f"The tweet, 1 to {max_text_chars} characters, any script.")

    class BatchPredictRequest(Options):
        """Several tweets to classify; results come back in the same order."""

        texts: list[text_type] = Field(
            min_length=1, max_length=max_batch_texts, description=f"1 to {max_batch_texts} tweets."
        )

    return PredictRequest, BatchPredictRequest


class LabelScore(BaseModel):
    """A label and its probability."""

    label: str
    score: float


class WordAttribution(BaseModel):
    """One word of the text and how much it decided the chosen label."""

    word: str
    start: int = Field(description="Offset of its first character in the text.")
    end: int = Field(description="Offset just past its last character.")
    weight: float = Field(
        description="The chosen label's probability minus its probability without this word: positive "
        "speaks for the label, negative against."
    )


class Extras(BaseModel):
    """The fields a request's options add to each text's answer (absent when not asked for)."""

    abstained: bool | None = Field(
        None, description="Whether the best score is below min_score (present when a min_score applies)."
    )
    raw_scores: list[LabelScore] | None = Field(
        None, description="Every label's logit, in the model's label order (raw_scores: true)."
    )
    explanation: list[WordAttribution] | None = Field(
        None, description="Each word's weight for the chosen label (explain: true)."
    )


class PredictResponse(Extras):
    """The earlier service's answer, plus fields old clients ignore."""

    sentiment: list[LabelScore] = Field(description="The top_k labels, best first.")
    inference_time: float = Field(description="Seconds the model ran for the batch holding this text.")
    model_version: str = Field(description="Name, variant and hash prefix of the model package.")
    truncated: bool = Field(description="Whether the text was cut to the model's maximum length.")
    model: str = Field(description="The name of the model that answered.")


class BatchItem(Extras):
    """One text's result within a batch answer."""

    sentiment: list[LabelScore]
    truncated: bool


class BatchPredictResponse(BaseModel):
    """Results in the order of the request's texts."""

    results: list[BatchItem]
    inference_time: float
    model_version: str
    model: str


class ErrorDetail(BaseModel):
    """One problem with a request: which field, what is wrong."""

    field: str
    message: str
    type: str


class ErrorResponse(BaseModel):
    """Every error answer: a sentence, and for bad input one entry per problem."""

    detail: str
    errors: list[ErrorDetail] = Field(default_factory=list)


class Health(BaseModel):
    """The earlier service's health answer, plus the model and the state."""

    status: Literal["healthy", "loading", "draining", "failed"]
    model_version: str | None = None
    ready: bool = False


class Probe(BaseModel):
    """Liveness or readiness."""

    status: Literal["alive", "ready", "loading", "draining", "failed"]


class ModelInfo(BaseModel):
    """What the served model is: its card without local paths."""

    model_config = ConfigDict(protected_namespaces=())

    name: str
    model_version: str
    variant: str
    labels: list[str]
    normaliser: str
    max_length: int
    base_model: str
    created_at: str
    metrics: dict[str, Scores]
    package: PackageRecord | None
    gate: GateReport | None
    label_shares: dict[str, float]
    versions: dict[str, str]
    calibration: CalibrationRecord | None = None
    model: str = Field(description="The name it is served under.")
    device: str = Field(description="Where it runs: cpu or cuda.")
    state: str = Field(description="loading, ready or failed.")


class ModelEntry(BaseModel):
    """One served model in ``GET /models``: its card once loaded, its name and state before."""

    model_config = ConfigDict(protected_namespaces=(), extra="allow")

    model: str
    state: str
    default: bool
    model_version: str | None


class ModelList(BaseModel):
    """Every model this service holds, the default first."""

    models: list[ModelEntry]
    default: str
