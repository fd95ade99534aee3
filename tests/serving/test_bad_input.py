"""Every kind of bad input is a clear 4xx naming the field and the limit; odd but valid text is served."""

from __future__ import annotations

import json

import pytest

from live_server import serving, settings_for

MAX_CHARS = 50
MAX_TEXTS = 4
MAX_BYTES = 2048
JSON = {"Content-Type": "application/json"}


def _json(payload: object) -> bytes:
    return json.dumps(payload).encode()


# (id, body bytes, headers, status, field named in errors (or None), words the detail must contain)
BAD = [
    ("missing-text", _json({}), JSON, 422, "text", ["text", "required"]),
    ("text-not-a-string", _json({"text": 5}), JSON, 422, "text", ["string"]),
    ("text-null", _json({"text": None}), JSON, 422, "text", ["string"]),
    ("text-empty", _json({"text": ""}), JSON, 422, "text", ["at least 1"]),
    ("text-whitespace", _json({"text": " \n\t\u3000 "}), JSON, 422, "text", ["whitespace"]),
    ("text-too-long", _json({"text": "a" * (MAX_CHARS + 1)}), JSON, 422, "text", [str(MAX_CHARS)]),
    ("text-nul", _json({"text": "a\u0000b"}), JSON, 422, "text", ["U+0000", "control"]),
    ("text-escape-char", _json({"text": "colour \u001b[31m"}), JSON, 422, "text", ["U+001B"]),
    ("batch-too-large", _json({"texts": ["a"] * (MAX_TEXTS + 1)}), JSON, 422, "texts", [str(MAX_TEXTS)]),
    ("batch-empty", _json({"texts": []}), JSON, 422, "texts", ["at least 1"]),
    ("batch-item-blank", _json({"texts": ["fine", "  "]}), JSON, 422, "texts[1]", ["whitespace"]),
    ("batch-not-a-list", _json({"texts": "abc"}), JSON, 422, "texts", ["list"]),
    ("top-k-zero", _json({"text": "a", "top_k": 0}), JSON, 422, "top_k", ["greater than or equal to 1"]),
    ("top-k-string", _json({"text": "a", "top_k": "2"}), JSON, 422, "top_k", ["integer"]),
    ("unknown-field", _json({"text": "a", "lang": "en"}), JSON, 422, "lang", ["not permitted"]),
    ("text-and-texts", _json({"text": "a", "texts": ["b"]}), JSON, 422, "text", ["not permitted"]),
    ("not-an-object", _json(["a"]), JSON, 422, "body", ["JSON object"]),
    ("malformed-json", b'{"text": "a"', JSON, 400, "body", ["not valid JSON"]),
    ("invalid-utf8", b'{"text": "caf\xe9"}', JSON, 400, "body", ["UTF-8"]),
    ("lone-surrogate", b'{"text": "\\ud800"}', JSON, 400, "body", ["not valid JSON"]),
    (
        "wrong-content-type",
        _json({"text": "a"}),
        {"Content-Type": "text/plain"},
        415,
        None,
        ["application/json"],
    ),
    (
        "form-content-type",
        b"text=a",
        {"Content-Type": "application/x-www-form-urlencoded"},
        415,
        None,
        ["JSON"],
    ),
    ("body-over-byte-limit", _json({"text": "a" * MAX_BYTES}), JSON, 413, None, [str(MAX_BYTES)]),
]
GOOD = [
    ("emoji-only", "😍🔥🎉"),
    ("chinese", "我爱我的新iPad"),
    ("arabic", "أحب هاتفي الجديد"),
    ("combining-marks", "cafe\u0301 ñ"),
    ("tabs-and-newlines", "\tgreat\r\nlaunch\n"),
    ("at-the-limit", "x" * MAX_CHARS),
    ("markup", "<script>alert(1)</script> &amp; {link}"),
]


@pytest.fixture(scope="module")
def client(onnx_package):
    settings = settings_for(
        onnx_package, max_text_chars=MAX_CHARS, max_batch_texts=MAX_TEXTS, max_body_bytes=MAX_BYTES
    )
    with serving(settings) as client:
        yield client


@pytest.mark.parametrize(
    ("body", "headers", "status", "field", "words"), [c[1:] for c in BAD], ids=[c[0] for c in BAD]
)
def test_bad_input_gets_a_clear_4xx_and_the_server_keeps_serving(client, body, headers, status, field, words):
    response = client.post("/predict", content=body, headers=headers)

    assert response.status_code == status, response.text
    payload = response.json()
    for word in words:
        assert word.lower() in payload["detail"].lower(), payload
    if field is not None:
        assert field in [error["field"] for error in payload["errors"]], payload
    assert "Traceback" not in response.text and "/site-packages/" not in response.text
    assert client.post("/predict", json={"text": "still serving"}).status_code == 200


def test_chunked_body_over_the_limit_is_refused_while_streaming(client) -> None:
    def chunks():
        yield b'{"text": "'
        for _ in range(10):
            yield b"a" * 512
        yield b'"}'

    response = client.post("/predict", content=chunks(), headers=JSON)

    assert response.status_code == 413
    assert str(MAX_BYTES) in response.json()["detail"]


@pytest.mark.parametrize("text", [c[1] for c in GOOD], ids=[c[0] for c in GOOD])
def test_any_script_and_emoji_are_served(client, text) -> None:
    response = client.post("/predict", json={"text": text})

    assert response.status_code == 200, response.text
    assert response.json()["sentiment"][0]["score"] > 0


def test_missing_content_type_is_read_as_json_for_old_clients(client) -> None:
    response = client.post("/predict", content=_json({"text": "hello"}))

    assert response.status_code == 200
