"""API keys, rate limits and CORS."""

from __future__ import annotations

import logging

import pytest

from sentiment_api.errors import RateLimitedError
from sentiment_api.server.security import RateLimiter
from serving import serving, settings_for

KEY = "k3y-0123456789abcdef"
OTHER_KEY = "other-0123456789abcdef"


@pytest.fixture(scope="module")
def keyed(onnx_package, tmp_path_factory):
    key_file = tmp_path_factory.mktemp("keys") / "keys.txt"
    key_file.write_text(f"# one key per line\n{OTHER_KEY}\n")
    with serving(settings_for(onnx_package, api_keys=[KEY], api_keys_file=key_file)) as client:
        yield client


def test_predict_needs_a_known_key(keyed) -> None:
    missing = keyed.post("/predict", json={"text": "hi"})
    wrong = keyed.post("/predict", json={"text": "hi"}, headers={"X-API-Key": "wrong-0123456789abcdef"})
    model = keyed.get("/model")

    assert missing.status_code == wrong.status_code == model.status_code == 401
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert "API key" in missing.json()["detail"]


@pytest.mark.parametrize(
    "headers",
    [{"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY}, {"Authorization": f"bearer {OTHER_KEY}"}],
    ids=["bearer", "x-api-key", "key-from-file"],
)
def test_a_known_key_in_either_header_is_accepted(keyed, headers) -> None:
    assert keyed.post("/predict", json={"text": "hi"}, headers=headers).status_code == 200


def test_probes_metrics_and_pages_stay_open(keyed) -> None:
    for path in ("/", "/healthz", "/readyz", "/metrics", "/docs", "/ui", "/openapi.json"):
        assert keyed.get(path).status_code == 200, path


def test_keys_are_never_logged(keyed, caplog) -> None:
    caplog.set_level(logging.DEBUG)

    keyed.post("/predict", json={"text": "hi"}, headers={"X-API-Key": KEY})
    keyed.post("/predict", json={"text": "hi"}, headers={"Authorization": "Bearer not-a-key-0123456789"})

    logged = "\n".join(f"{record.getMessage()} {getattr(record, 'fields', '')}" for record in caplog.records)
    assert "request" in logged
    assert KEY not in logged and "not-a-key" not in logged


def test_openapi_documents_401_when_keys_are_on(keyed) -> None:
    responses = keyed.get("/openapi.json").json()["paths"]["/predict"]["post"]["responses"]

    assert "401" in responses


def test_a_client_over_its_rate_gets_429_with_retry_after(onnx_package) -> None:
    settings = settings_for(onnx_package, rate_limit_per_s=0.5, rate_limit_burst=2)
    with serving(settings) as client:
        answers = [client.post("/predict", json={"text": "hi"}) for _ in range(3)]
        health = client.get("/readyz")

    assert [a.status_code for a in answers] == [200, 200, 429]
    assert int(answers[2].headers["Retry-After"]) in (1, 2)
    assert "rate limit" in answers[2].json()["detail"]
    assert health.status_code == 200  # probes are not rate limited


def test_rate_limiter_refills_over_time_and_keeps_clients_apart() -> None:
    limiter = RateLimiter(rate=2.0, burst=1)

    limiter.check("a", now=0.0)
    limiter.check("b", now=0.0)
    with pytest.raises(RateLimitedError, match="rate limit of 2 requests/s") as refused:
        limiter.check("a", now=0.1)
    limiter.check("a", now=0.6)

    assert refused.value.retry_after == pytest.approx(0.4)  # 0.2 of a token back, 0.8 to go at 2/s


def test_cors_is_off_unless_origins_are_configured(onnx_package) -> None:
    preflight = {"Origin": "https://example.org", "Access-Control-Request-Method": "POST"}
    with serving(settings_for(onnx_package)) as client:
        closed = client.post("/predict", json={"text": "hi"}, headers={"Origin": "https://example.org"})
    with serving(settings_for(onnx_package, cors_origins=["https://example.org"])) as client:
        opened = client.options("/predict", headers=preflight)
        stranger = client.options("/predict", headers={**preflight, "Origin": "https://evil.example"})

    assert "access-control-allow-origin" not in closed.headers
    assert opened.headers["access-control-allow-origin"] == "https://example.org"
    assert "access-control-allow-origin" not in stranger.headers
