"""Shadow traffic: a candidate answers a live model's requests off the response path; its agreement,
label shares, largest differences and latency are summarised; it is promoted like any swap."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from test_admin import ADMIN, ADMIN_KEY, version_of

from live_server import serving, settings_for, wait_until


@pytest.fixture(scope="module")
def models_dir(onnx_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shadow-models")
    version_of(onnx_package, root / "v1", "brand-v1")
    version_of(onnx_package, root / "v2", "brand-v2")  # the same weights: it agrees everywhere
    swapped = version_of(onnx_package, root / "swapped", "brand-swapped")
    card = json.loads((swapped / "model_card.json").read_text())
    card["labels"] = card["labels"][1:] + card["labels"][:1]  # every answer names another label
    (swapped / "model_card.json").write_text(json.dumps(card))
    return root


def ask(client, count: int) -> list[dict]:
    answers = []
    for index in range(count):
        answers.append(client.post("/predict", json={"text": f"love the ipad {index}"}).json())
        time.sleep(0.02)  # the shadow is off the response path: give it its turn
    return answers


def thread_policies(pid: int) -> list[int]:
    """The scheduling policy of every thread of process ``pid``."""
    return [os.sched_getscheduler(int(tid)) for tid in os.listdir(f"/proc/{pid}/task")]


def summary_when(client, name: str, texts: int, answers: list[dict] | None = None) -> dict:
    """The shadow's summary once it has compared ``texts``. With ``answers``, one more request is sent
    (its answer appended) at each look: the shadow takes one request at a time, drops what comes while
    it is busy, and runs on idle cores only, so on a busy machine it may need more than were sent."""

    def compared_enough() -> bool:
        if answers is not None:
            answers.extend(ask(client, 1))
        return client.get(f"/models/{name}/shadow").json()["compared_texts"] >= texts

    wait_until(compared_enough, timeout=120, interval=0.1)
    return client.get(f"/models/{name}/shadow").json()


def test_a_shadow_with_the_same_weights_agrees_everywhere_and_answers_nobody(models_dir) -> None:
    settings = settings_for(
        models_dir / "v1", model=[f"brand={models_dir / 'v1'}"], shadow=[f"brand={models_dir / 'v2'}"]
    )
    with serving(settings) as client:
        wait_until(lambda: client.get("/models/brand/shadow").json()["state"] == "ready")
        answers = ask(client, 10)
        summary = summary_when(client, "brand", 3, answers)
        metrics = client.get("/metrics").text
        service = client.app.state.service
        shadow_pid = service.shadow("brand").process.pid
        shadow_policies = thread_policies(shadow_pid)
        live_policies = client.portal.call(
            service.model("brand").batcher.run_in_workers, lambda: os.sched_getscheduler(0)
        )

    # the shadow runs in a process of its own, every thread of it only on idle cores; the live
    # model's threads are as they were
    assert shadow_pid != os.getpid()
    assert shadow_policies and set(shadow_policies) == {os.SCHED_IDLE}
    assert os.SCHED_IDLE not in live_policies
    assert {a["model_version"].split("-")[1] for a in answers} == {"v1"}  # the live model answers
    assert summary["shadow_version"].startswith("brand-v2-") and summary["agreement"] == 1.0
    assert summary["live_label_shares"] == summary["shadow_label_shares"]
    assert all(d["probability_difference"] < 1e-5 for d in summary["largest_differences"])
    # one of each request at most
    assert 3 <= summary["compared_texts"] + summary["dropped_requests"] <= len(answers)
    assert summary["latency_ms"]["p50"] > 0
    assert 'sentiment_shadow_agreement_total{agreed="true",model="brand"}' in metrics
    assert 'sentiment_shadow_requests_total{model="brand",outcome="compared"}' in metrics


def test_a_disagreeing_shadow_is_measured_then_promoted_through_the_admin_api(models_dir) -> None:
    settings = settings_for(
        models_dir / "v1", model=[f"brand={models_dir / 'v1'}"], admin_keys=[ADMIN_KEY], models_dir=models_dir
    )
    with serving(settings) as client:
        assert client.get("/models/brand/shadow").status_code == 404
        attached = client.put("/admin/models/brand/shadow", json={"package": "swapped"}, headers=ADMIN)
        assert attached.status_code == 200, attached.text
        summary = summary_when(client, "brand", 3, ask(client, 10))
        assert summary["agreement"] < 1.0
        assert summary["live_label_shares"] != summary["shadow_label_shares"]
        assert summary["largest_differences"][0]["live"] != summary["largest_differences"][0]["shadow"]

        promoted = client.post("/admin/models/brand/shadow/promote", headers=ADMIN)
        assert promoted.status_code == 200 and promoted.json()["model_version"].startswith("brand-swapped-")
        assert client.get("/models/brand/shadow").status_code == 404  # promoted: no longer a shadow
        answer = client.post("/predict", json={"text": "hi", "model": "brand"}).json()
        assert answer["model_version"].startswith("brand-swapped-")

        again = client.put("/admin/models/brand/shadow", json={"package": "v2"}, headers=ADMIN)
        assert again.status_code == 200
        detached = client.post("/admin/models/brand/shadow/detach", headers=ADMIN)
        assert detached.status_code == 200 and client.get("/models/brand/shadow").status_code == 404


def process_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]  # R, S, T (stopped), ...


def test_the_shadow_is_paused_while_a_live_request_is_under_way_and_goes_on_when_none_is(models_dir) -> None:
    settings = settings_for(
        models_dir / "v1", model=[f"brand={models_dir / 'v1'}"], shadow=[f"brand={models_dir / 'v2'}"]
    )
    with serving(settings) as client:
        wait_until(lambda: client.get("/models/brand/shadow").json()["state"] == "ready")
        service, activity = client.app.state.service, client.app.state.metrics.activity
        pid = service.shadow("brand").process.pid
        before = process_state(pid)
        client.portal.call(activity.enter)  # a slow request is under way throughout
        paused = time.monotonic()
        try:
            answer = client.post("/predict", json={"text": "love the ipad", "model": "brand"})
            time.sleep(1.0)  # the shadow's turn, were it not paused
            # a stop takes effect when the process is next scheduled: on a busy machine, a moment later
            wait_until(lambda: process_state(pid) == "T", timeout=10)
            during = client.get("/models/brand/shadow").json()
        finally:
            resumed = time.monotonic()
            client.portal.call(activity.leave)
        summary = summary_when(client, "brand", 1)
        done = time.monotonic()
        after = process_state(pid)

    assert answer.status_code == 200 and before != "T"
    assert during["compared_texts"] == 0  # stopped with the request in hand
    assert summary["compared_texts"] == 1 and summary["agreement"] == 1.0 and after != "T"
    # its latency is its running time after the resume, not the second or more it was paused
    assert resumed - paused >= 1.0
    assert summary["latency_ms"]["p50"] <= (done - resumed) * 1000 + 50


def test_a_shadow_whose_process_dies_stops_comparing_and_the_live_model_answers_on(models_dir) -> None:
    settings = settings_for(
        models_dir / "v1", model=[f"brand={models_dir / 'v1'}"], shadow=[f"brand={models_dir / 'v2'}"]
    )
    with serving(settings) as client:
        wait_until(lambda: client.get("/models/brand/shadow").json()["state"] == "ready")
        os.kill(client.app.state.service.shadow("brand").process.pid, signal.SIGKILL)
        wait_until(lambda: "exit code" in (client.get("/models/brand/shadow").json()["error"] or ""))
        answers = ask(client, 5)
        summary = client.get("/models/brand/shadow").json()
        ready = client.get("/readyz").status_code

    assert all(answer["sentiment"] for answer in answers) and ready == 200
    assert summary["state"] == "failed" and "exit code -9" in summary["error"]
    assert summary["dropped_requests"] >= 5  # offered to a failed shadow: dropped and counted


def test_a_shadow_that_cannot_load_is_reported_and_the_live_model_serves(models_dir, tmp_path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(models_dir / "v2", broken)
    (broken / "model.onnx").write_bytes(b"not a model")
    settings = settings_for(
        models_dir / "v1", model=[f"brand={models_dir / 'v1'}"], shadow=[f"brand={broken}"]
    )
    with serving(settings) as client:
        wait_until(lambda: client.get("/models/brand/shadow").json()["state"] == "failed", timeout=120)
        summary = client.get("/models/brand/shadow").json()
        answer = client.post("/predict", json={"text": "love it", "model": "brand"})

    assert answer.status_code == 200
    assert summary["error"] and summary["shadow_version"] is None


def test_shadow_work_is_dropped_while_the_live_model_has_texts_queued(models_dir) -> None:
    from prometheus_client import CollectorRegistry

    from sentiment_api.serving.observability import Metrics
    from sentiment_api.serving.served_model import State
    from sentiment_api.serving.shadow import Shadow

    metrics = Metrics(CollectorRegistry())
    shadow = Shadow("brand", models_dir / "v2", 1.0, metrics)  # never started: no process needed here
    shadow.state = State.READY
    shadow.offer(["a tweet"], None, [], live_queued=3)  # type: ignore[arg-type]
    assert shadow.stats.dropped == 1
    assert (
        metrics.registry.get_sample_value(
            "sentiment_shadow_requests_total", {"model": "brand", "outcome": "dropped"}
        )
        == 1
    )


def test_a_shadow_for_a_model_not_served_is_refused(onnx_package) -> None:
    from sentiment_api.core.errors import ConfigError
    from sentiment_api.core.settings import load_settings

    with pytest.raises(ConfigError, match="shadow for nope: no such model"):
        load_settings(model=[str(onnx_package)], shadow=[f"nope={onnx_package}"])
