"""The admin API: a new version swapped in while serving, refused when a check fails, rolled back;
off without admin keys, and unable to read outside the models directory."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from live_server import LiveServer, free_port, serving, serving_async, settings_for, wait_until
from sentiment_api.core.settings import default_model_dir
from sentiment_api.serving import create_app

ADMIN_KEY = "admin-0123456789abcdef"
ADMIN = {"X-Admin-Key": ADMIN_KEY}


def version_of(source: Path, out: Path, name: str, *, gate_passed: bool = True) -> Path:
    """A copy of the package ``source`` as another version: its card renamed (so its version
    differs) and its gate record passed or failed."""
    shutil.copytree(source, out)
    card_path = out / "model_card.json"
    card = json.loads(card_path.read_text())
    card["name"] = name
    gate = card.get("gate") or {}
    gate.update(passed=gate_passed, failures=[] if gate_passed else ["int8 agreement 0.80 < 0.99"])
    card["gate"] = gate
    card_path.write_text(json.dumps(card))
    return out


@pytest.fixture(scope="module")
def models_dir(onnx_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    version_of(onnx_package, root / "v1", "brand-v1")
    version_of(onnx_package, root / "v2", "brand-v2")
    version_of(onnx_package, root / "ungated", "brand-ungated", gate_passed=False)
    (version_of(onnx_package, root / "corrupt", "brand-corrupt") / "model.onnx").write_bytes(b"not onnx")
    (root.parent / "outside").mkdir(exist_ok=True)
    return root


def admin_settings(models_dir: Path, **overrides):
    return settings_for(
        models_dir / "v1",
        model=[f"brand={models_dir / 'v1'}"],
        admin_keys=[ADMIN_KEY],
        models_dir=models_dir,
        **overrides,
    )


def version(client) -> str:
    answer = client.post("/predict", json={"text": "love it", "model": "brand"})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["model_version"])


def test_a_swap_checks_the_package_then_serves_it_and_rollback_restores_the_previous(models_dir) -> None:
    with serving(admin_settings(models_dir)) as client:
        assert version(client).startswith("brand-v1-")
        swapped = client.put("/admin/models/brand", json={"package": "v2"}, headers=ADMIN)
        assert swapped.status_code == 200, swapped.text
        assert swapped.json()["model_version"].startswith("brand-v2-")
        assert swapped.json()["previous_version"].startswith("brand-v1-")
        assert version(client).startswith("brand-v2-")
        listed = client.get("/models").json()["models"][0]
        assert listed["model_version"].startswith("brand-v2-") and listed["state"] == "ready"
        info = {
            line.split('model_version="')[1].split('"')[0]: line.rsplit(" ", 1)[1]
            for line in client.get("/metrics").text.splitlines()
            if line.startswith("sentiment_model_info{")
        }
        assert sorted(info.values()) == ["0.0", "1.0"]  # the released version is marked 0

        for package, reason in (("ungated", "gate failed"), ("corrupt", "sha256")):
            refused = client.put("/admin/models/brand", json={"package": package}, headers=ADMIN)
            assert refused.status_code == 409 and reason in refused.json()["detail"], refused.text
            assert version(client).startswith("brand-v2-")  # the serving version keeps serving

        back = client.post("/admin/models/brand/rollback", headers=ADMIN)
        assert back.status_code == 200 and back.json()["model_version"].startswith("brand-v1-")
        assert version(client).startswith("brand-v1-")
        again = client.post("/admin/models/brand/rollback", headers=ADMIN)
        assert again.status_code == 409 and "no earlier version" in again.json()["detail"]
        assert client.get("/readyz").status_code == 200


def named_models_in_the_document(client) -> dict[str, list[str]]:
    """The models each ``{name}`` path operation of the OpenAPI document lists."""
    found = {}
    for path, operations in client.get("/openapi.json").json()["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "name" and "enum" in parameter["schema"]:
                    found[f"{method.upper()} {path}"] = parameter["schema"]["enum"]
    return found


def test_a_put_for_a_new_name_adds_a_model(models_dir) -> None:
    with serving(admin_settings(models_dir)) as client:
        listed_before = named_models_in_the_document(client)
        added = client.put("/admin/models/general", json={"package": "v2"}, headers=ADMIN)
        assert added.status_code == 200 and added.json()["previous_version"] is None
        answer = client.post("/predict", json={"text": "hi", "model": "general"}).json()
        assert answer["model"] == "general" and answer["model_version"].startswith("brand-v2-")
        listed_after = named_models_in_the_document(client)

    # the document lists the models served now: the one the PUT added too
    assert listed_before["GET /models/{name}"] == ["brand"]
    assert "POST /admin/models/{name}/rollback" in listed_after
    assert set(listed_after) == set(listed_before)
    assert all(names == ["brand", "general"] for names in listed_after.values()), listed_after


@pytest.mark.parametrize(
    ("package", "status", "field_message"),
    [
        ("../outside", 403, "not a directory inside"),
        ("/etc", 403, "not a directory inside"),
        ("nope", 404, "no such directory"),
        ("x" * 1000, 404, "no such directory"),
    ],
)
def test_the_admin_api_reads_only_inside_the_models_directory(
    models_dir, package, status, field_message
) -> None:
    with serving(admin_settings(models_dir)) as client:
        refused = client.put("/admin/models/brand", json={"package": package}, headers=ADMIN)
        assert refused.status_code == status
        assert refused.json()["errors"][0]["field"] == "package"
        assert field_message in refused.json()["errors"][0]["message"]
        bad_body = client.put("/admin/models/brand", json={"package": "v2", "extra": 1}, headers=ADMIN)
        assert bad_body.status_code == 422 and bad_body.json()["errors"][0]["field"] == "extra"


def test_the_admin_api_needs_its_own_key_and_is_off_without_one(models_dir, onnx_package) -> None:
    with serving(admin_settings(models_dir, api_keys=["client-0123456789abcdef"])) as client:
        for headers in (
            {},
            {"X-Admin-Key": "wrong-0123456789abcdef"},
            {"X-API-Key": "client-0123456789abcdef"},
        ):
            refused = client.put("/admin/models/brand", json={"package": "v2"}, headers=headers)
            assert refused.status_code == 401 and "admin key" in refused.json()["detail"]
        assert (
            'sentiment_auth_failures_total{reason="admin"} 3.0'
            in client.get("/metrics", headers={"X-API-Key": "client-0123456789abcdef"}).text
        )
    with serving(settings_for(onnx_package)) as client:
        off = client.put("/admin/models/default", json={"package": "v2"}, headers=ADMIN)
        assert off.status_code == 403 and "SENTIMENT_ADMIN_KEYS" in off.json()["detail"]
    with serving(settings_for(onnx_package, admin_keys=[ADMIN_KEY])) as client:
        no_dir = client.put("/admin/models/default", json={"package": "v2"}, headers=ADMIN)
        assert no_dir.status_code == 403 and "SENTIMENT_MODELS_DIR" in no_dir.json()["detail"]


def test_guessing_the_admin_key_is_throttled_like_a_client_key(models_dir) -> None:
    settings = admin_settings(models_dir, auth_failure_limit=3, auth_failure_window_s=30)
    with serving(settings) as client:
        guesses = [
            client.put(
                "/admin/models/brand", json={"package": "v2"}, headers={"X-Admin-Key": f"guess-{i:016d}"}
            )
            for i in range(3)
        ]
        right = client.put("/admin/models/brand", json={"package": "v2"}, headers=ADMIN)
        predict = client.post("/predict", json={"text": "love it"})  # no client keys: not throttled
        metrics = client.get("/metrics").text
        served = version(client)

    assert [g.status_code for g in guesses] == [401, 401, 401]
    assert right.status_code == 429 and "failed authentications" in right.json()["detail"]
    assert int(right.headers["Retry-After"]) == 10  # 30 s for 3 tries: one back every 10 s
    assert predict.status_code == 200 and served.startswith("brand-v1-")  # the swap never ran
    assert 'sentiment_auth_failures_total{reason="admin"} 3.0' in metrics
    assert 'sentiment_throttled_requests_total{limit="auth_failures"} 1.0' in metrics


def test_the_admin_api_on_its_own_port_is_not_found_on_the_public_one(models_dir) -> None:
    with serving(admin_settings(models_dir, admin_port=free_port())) as client:  # the test client: port 80
        hidden = client.put("/admin/models/brand", json={"package": "v2"}, headers=ADMIN)
        assert hidden.status_code == 404 and version(client).startswith("brand-v1-")


def test_updates_are_refused_with_several_workers(models_dir) -> None:
    with serving(admin_settings(models_dir, workers=2)) as client:
        refused = client.put("/admin/models/brand", json={"package": "v2"}, headers=ADMIN)
        assert refused.status_code == 409 and "SIGHUP" in refused.json()["detail"]


def test_requests_that_chose_the_old_version_finish_on_it(models_dir) -> None:
    async def scenario() -> tuple[httpx.Response, list[httpx.Response], list[httpx.Response]]:
        app = create_app(admin_settings(models_dir))
        async with serving_async(app) as client:

            async def ask(index: int) -> httpx.Response:
                return await client.post("/predict", json={"text": f"tweet {index}", "model": "brand"})

            before = [asyncio.ensure_future(ask(i)) for i in range(40)]
            await asyncio.sleep(0)  # they are on their way
            swap = await client.put("/admin/models/brand", json={"package": "v2"}, headers=ADMIN)
            after = await asyncio.gather(*(ask(i) for i in range(10)))
            answered = await asyncio.gather(*before)
        return swap, list(answered), list(after)

    swap, answered, after = asyncio.run(asyncio.wait_for(scenario(), 120))

    assert swap.status_code == 200
    assert all(response.status_code == 200 for response in [*answered, *after])
    assert {r.json()["model_version"].split("-")[1] for r in after} == {"v2"}
    assert {r.json()["model_version"].split("-")[1] for r in answered} <= {"v1", "v2"}


def test_a_swap_and_a_rollback_under_load_fail_no_request(tmp_path: Path) -> None:
    """The real server as a process, the shipped package in two versions, clients posting for the
    whole swap and rollback: every answer a 200 naming the version that produced it. The admin API
    has a port of its own, and is not found on the public one."""
    root = tmp_path / "models"
    root.mkdir()
    version_of(default_model_dir(), root / "v1", "shipped-v1")
    version_of(default_model_dir(), root / "v2", "shipped-v2")
    server = LiveServer(
        root / "v1",
        tmp_path / "server.log",
        SENTIMENT_ADMIN_KEYS=ADMIN_KEY,
        SENTIMENT_MODELS_DIR=str(root),
        SENTIMENT_ADMIN_PORT=str(admin_port := free_port()),
    )
    statuses: Counter[str] = Counter()
    versions: list[tuple[float, float, str]] = []  # (sent, answered, version) of each request
    stop = threading.Event()

    def client_loop() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    answer = client.post("/predict", json={"text": "what a day for the new ipad"})
                except httpx.HTTPError as error:
                    statuses[type(error).__name__] += 1
                    continue
                statuses[str(answer.status_code)] += 1
                if answer.status_code == 200:
                    versions.append((sent, time.monotonic(), answer.json()["model_version"].split("-")[1]))

    with server:
        server.wait_ready()
        clients = [threading.Thread(target=client_loop) for _ in range(4)]
        for thread in clients:
            thread.start()

        def answered_since(moment: float, count: int = 8) -> None:
            # by count, not by a sleep: a slow machine answers fewer in any fixed time
            wait_until(lambda: sum(sent > moment for sent, _, _ in list(versions)) >= count, timeout=60)

        try:
            answered_since(0.0)
            public = httpx.put(f"{server.url}/admin/models/default", json={"package": "v2"}, headers=ADMIN)
            assert public.status_code == 404
            with httpx.Client(base_url=f"http://127.0.0.1:{admin_port}", timeout=120, headers=ADMIN) as admin:
                swap_sent = time.monotonic()
                swapped = admin.put("/admin/models/default", json={"package": "v2"})
                swap_done = time.monotonic()
                answered_since(swap_done)
                rollback_sent = time.monotonic()
                rolled = admin.post("/admin/models/default/rollback")
                rollback_done = time.monotonic()
            answered_since(rollback_done)
        finally:
            stop.set()
            for thread in clients:
                thread.join()

    assert swapped.status_code == 200 and rolled.status_code == 200, (swapped.text, rolled.text)
    assert set(statuses) == {"200"} and statuses["200"] > 20, statuses
    # a request wholly before the swap, between swap and rollback, or after the rollback got the
    # version serving then; one that overlapped a switch may have either
    before = {v for sent, done, v in versions if done < swap_sent}
    between = {v for sent, done, v in versions if sent > swap_done and done < rollback_sent}
    after = {v for sent, done, v in versions if sent > rollback_done}
    assert (before, between, after) == ({"v1"}, {"v2"}, {"v1"}), versions
