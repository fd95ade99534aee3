"""API keys, throttled failed authentications, rate limits, protected metrics and CORS."""

from __future__ import annotations

import logging

import httpx
import pytest

from live_server import free_port, serving, settings_for

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


def test_probes_and_pages_stay_open_and_metrics_need_a_key(keyed) -> None:
    for path in ("/", "/healthz", "/readyz", "/docs", "/ui", "/openapi.json"):
        assert keyed.get(path).status_code == 200, path
    assert keyed.get("/metrics").status_code == 401
    with_key = keyed.get("/metrics", headers={"X-API-Key": KEY})
    assert with_key.status_code == 200 and "sentiment_requests_total" in with_key.text


def test_without_keys_metrics_stay_open_on_the_public_port(onnx_package) -> None:
    with serving(settings_for(onnx_package)) as client:
        assert client.get("/metrics").status_code == 200


def test_a_metrics_port_serves_them_instead_of_the_public_port(onnx_package) -> None:
    port = free_port()
    with serving(settings_for(onnx_package, api_keys=[KEY], metrics_port=port)) as client:
        client.post("/predict", json={"text": "hi"}, headers={"X-API-Key": KEY})
        public = client.get("/metrics", headers={"X-API-Key": KEY})
        private = httpx.get(f"http://127.0.0.1:{port}/metrics")
        paths = client.get("/openapi.json").json()["paths"]

    assert public.status_code == 404 and "/metrics" not in paths
    assert private.status_code == 200
    assert 'sentiment_requests_total{model="default",route="/predict",status="200"} 1.0' in private.text
    with pytest.raises(httpx.TransportError):  # stopped with the app
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_failed_authentications_are_throttled_counted_and_logged_without_the_key(
    onnx_package, caplog
) -> None:
    caplog.set_level(logging.INFO)
    settings = settings_for(onnx_package, api_keys=[KEY], auth_failure_limit=3, auth_failure_window_s=30)
    wrong = {"X-API-Key": "guess-0123456789abcdef"}
    with serving(settings) as client:
        answers = [client.post("/predict", json={"text": "hi"}, headers=wrong) for _ in range(3)]
        answers.append(client.post("/predict", json={"text": "hi"}))  # no key at all
        answers.append(client.post("/predict", json={"text": "hi"}, headers={"X-API-Key": KEY}))
        found = client.get("/metrics", headers={"X-API-Key": KEY})

    assert [a.status_code for a in answers] == [401, 401, 401, 429, 429]
    assert int(answers[4].headers["Retry-After"]) == 10  # 30 s for 3 tries: one back every 10 s
    assert found.status_code == 429  # locked out, key or not
    warnings = [r for r in caplog.records if r.getMessage() == "authentication failed"]
    assert [(r.levelname, r.fields["client"], r.fields["reason"]) for r in warnings] == [
        ("WARNING", "testclient", "unknown")
    ] * 3
    assert any(r.getMessage().startswith("client throttled") for r in caplog.records)
    logged = " ".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    assert "guess-0123" not in logged and KEY not in logged


def test_requests_without_a_key_do_not_lock_the_address_out(onnx_package) -> None:
    """A page opened again and again before its key is typed guesses nothing."""
    settings = settings_for(onnx_package, api_keys=[KEY], auth_failure_limit=3, auth_failure_window_s=30)
    with serving(settings) as client:
        keyless = [client.get("/models").status_code for _ in range(6)]
        keyed = client.post("/predict", json={"text": "hi"}, headers={"X-API-Key": KEY})
        found = client.get("/metrics", headers={"X-API-Key": KEY}).text

    assert keyless == [401] * 6 and keyed.status_code == 200
    assert 'sentiment_auth_failures_total{reason="missing"} 6.0' in found
    assert 'sentiment_throttled_requests_total{limit="auth_failures"}' not in found


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
