"""Per-client limits that hold for the whole instance: the shared token buckets, and two real worker
processes that must together keep to the configured rate and failed-authentication limit."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from live_server import LiveServer, free_port, listening_sockets, post_bytes, read_response, wait_until
from sentiment_api.core.errors import RateLimitedError
from sentiment_api.serving.limits import AuthFailureThrottle, RateLimiter, TokenBuckets

KEY = "k3y-0123456789abcdef"
SECOND_KEY = "second-0123456789abcdef"
RATE, BURST = 20.0, 20
WRONG = "wrong-0123456789abcdef-guess"


def test_buckets_in_one_file_are_shared_between_connections(tmp_path) -> None:
    path = TokenBuckets.create(tmp_path)
    first, second = TokenBuckets(path), TokenBuckets(path)  # as two worker processes open it

    verdicts = [
        bucket.take("client", rate=1.0, burst=3, now=100.0) for bucket in (first, second, first, second)
    ]

    assert [v.allowed for v in verdicts] == [True, True, True, False]
    assert verdicts[3].retry_after == pytest.approx(1.0)
    assert second.take("client", 1.0, 3, now=101.0).allowed  # one token back after a second
    assert first.take("another", 1.0, 3, now=101.0).allowed  # clients are apart


def test_a_fresh_database_forgets_an_earlier_run(tmp_path) -> None:
    old = TokenBuckets(TokenBuckets.create(tmp_path))
    for _ in range(3):
        old.take("client", 1.0, 3, now=0.0)
    old.close()

    assert TokenBuckets(TokenBuckets.create(tmp_path)).take("client", 1.0, 3, now=0.0).allowed


def test_full_buckets_are_forgotten_so_the_table_holds_only_recent_clients() -> None:
    buckets = TokenBuckets()
    for client in range(100):
        buckets.take(f"c{client}", rate=10.0, burst=5, now=0.0)
    buckets.take("late", rate=10.0, burst=5, now=60.0)  # long after every other bucket refilled

    assert len(buckets) == 1


def test_rate_limiter_refills_over_time_and_keeps_clients_apart() -> None:
    limiter = RateLimiter(TokenBuckets(), rate=2.0, burst=1)

    limiter.check("a", now=0.0)
    limiter.check("b", now=0.0)
    with pytest.raises(RateLimitedError, match="rate limit of 2 requests/s") as refused:
        limiter.check("a", now=0.1)
    limiter.check("a", now=0.6)

    assert refused.value.retry_after == pytest.approx(0.4)  # 0.2 of a token back, 0.8 to go at 2/s


def test_failed_authentications_lock_an_address_out_until_the_window_allows_another() -> None:
    throttle = AuthFailureThrottle(TokenBuckets(), limit=3, window_s=60.0)

    exhausted = [throttle.failed("10.0.0.1", now=0.0) for _ in range(3)]
    with pytest.raises(RateLimitedError, match="too many failed authentications") as refused:
        throttle.check("10.0.0.1", now=1.0)
    throttle.check("10.0.0.2", now=1.0)  # another address is not affected
    throttle.check("10.0.0.1", now=20.5)  # one try back after window / limit seconds

    assert exhausted == [False, False, True]
    assert refused.value.retry_after == pytest.approx(19.0)


def test_a_request_without_a_key_takes_no_try_but_is_refused_while_locked_out() -> None:
    throttle = AuthFailureThrottle(TokenBuckets(), limit=2, window_s=60.0)

    keyless = [throttle.attempt("10.0.0.1", matched=False, presented=False) for _ in range(20)]
    right = throttle.attempt("10.0.0.1", matched=True)
    wrong = [throttle.attempt("10.0.0.1", matched=False) for _ in range(2)]
    with pytest.raises(RateLimitedError, match="too many failed authentications"):
        throttle.attempt("10.0.0.1", matched=False, presented=False)

    assert keyless == [False] * 20 and right is False
    assert wrong == [False, True]  # the two wrong keys, not the twenty missing ones, used the tries


def test_a_failure_after_another_worker_took_the_last_try_is_refused_not_counted(tmp_path) -> None:
    path = TokenBuckets.create(tmp_path)
    first, second = (AuthFailureThrottle(TokenBuckets(path), limit=2, window_s=60.0) for _ in range(2))
    first.failed("10.0.0.1", now=0.0)

    first.check("10.0.0.1", now=0.0)  # both workers see one try left...
    second.check("10.0.0.1", now=0.0)
    last = first.failed("10.0.0.1", now=0.0)  # ...the first takes it...
    with pytest.raises(RateLimitedError, match="too many failed authentications") as refused:
        second.failed("10.0.0.1", now=0.0)  # ...so the second's failure is over the limit

    assert last is True
    assert refused.value.retry_after == pytest.approx(30.0)  # one try back after window / limit


@pytest.fixture(scope="module")
def two_workers(onnx_package, tmp_path_factory):
    """Two worker processes with keys, a rate limit and a separate metrics port."""
    log = tmp_path_factory.mktemp("limits") / "server.log"
    metrics_port = free_port()
    server = LiveServer(
        onnx_package,
        log,
        workers=2,
        SENTIMENT_API_KEYS=f"{KEY},{SECOND_KEY}",
        SENTIMENT_RATE_LIMIT_PER_S=str(RATE),
        SENTIMENT_RATE_LIMIT_BURST=str(BURST),
        SENTIMENT_METRICS_PORT=str(metrics_port),
    )
    server.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        server.wait_ready().wait_workers_ready(2)  # each loads its own model: none still loading
        yield server
    finally:
        server.stop()


def post_each_on_a_new_connection(url: str, headers: dict[str, str], seconds: float, clients: int = 6):
    """Clients posting as fast as they can, each request on a new connection (so the kernel spreads
    them over the workers); (send time, status) of each."""
    end = time.monotonic() + seconds

    def client(number: int) -> list[tuple[float, int]]:
        sent = []
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=url, limits=limits, timeout=10) as http:
            while (now := time.monotonic()) < end:
                answer = http.post("/predict", json={"text": f"love it {number}"}, headers=headers)
                sent.append((now, answer.status_code))
        return sent

    with ThreadPoolExecutor(clients) as pool:
        return [item for result in pool.map(client, range(clients)) for item in result]


def test_the_rate_limit_holds_across_two_workers_within_ten_percent(two_workers) -> None:
    headers = {"X-API-Key": KEY, "X-Forwarded-For": "10.0.0.1"}

    sent = post_each_on_a_new_connection(two_workers.url, headers, seconds=3.0)

    statuses = Counter(status for _, status in sent)
    elapsed = max(t for t, _ in sent) - min(t for t, _ in sent)
    allowed = BURST + RATE * elapsed
    print(f"{statuses} in {elapsed:.2f} s; the configured rate allows {allowed:.1f}")
    assert set(statuses) == {200, 429}
    assert statuses[429] > statuses[200]  # the clients asked for far more than the rate
    assert abs(statuses[200] - allowed) <= 0.1 * allowed
    answered_by = Counter(line["pid"] for line in two_workers.json_lines() if line.get("route") == "/predict")
    assert len(answered_by) == 2, answered_by  # both workers took part


def logged_by(server, request_ids: str) -> list[int]:
    """The worker that logged each request whose id starts with ``request_ids`` (the request log line
    is written as the response goes out, so the last may land just after it)."""
    return [
        line["pid"] for line in server.json_lines() if str(line.get("request_id", "")).startswith(request_ids)
    ]


def test_failed_authentications_are_throttled_across_workers_counted_and_logged(two_workers) -> None:
    guesser = {"X-API-Key": WRONG, "X-Forwarded-For": "10.0.0.2", "X-Request-ID": "guess"}

    guesses = Counter(status for _, status in post_each_on_a_new_connection(two_workers.url, guesser, 1.0, 4))
    with httpx.Client(base_url=two_workers.url) as http:
        right_key_same_address = http.post(
            "/predict", json={"text": "hi"}, headers={"X-API-Key": SECOND_KEY, "X-Forwarded-For": "10.0.0.2"}
        )
        other_address = http.post(
            "/predict", json={"text": "hi"}, headers={"X-API-Key": SECOND_KEY, "X-Forwarded-For": "10.0.0.3"}
        )
    scraped = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(httpx.get(two_workers.metrics_url).text)
        for sample in family.samples
    }

    assert guesses[401] == 10 and guesses[429] > 10 and set(guesses) == {401, 429}
    assert right_key_same_address.status_code == 429  # guessing right while locked out gains nothing
    assert 1 <= int(right_key_same_address.headers["Retry-After"]) <= 6  # 60 s / 10 tries
    assert "failed authentications" in right_key_same_address.json()["detail"]
    assert other_address.status_code == 200
    assert scraped[("sentiment_auth_failures_total", (("reason", "unknown"),))] == 10
    assert scraped[("sentiment_throttled_requests_total", (("limit", "auth_failures"),))] == guesses[429] + 1
    warnings = [line for line in two_workers.json_lines() if line["message"] == "authentication failed"]
    assert len(warnings) == 10 and {line["client"] for line in warnings} == {"10.0.0.2"}
    assert {line["level"] for line in warnings} == {"warning"}
    # both workers took guesses (the 429s too), yet together they answered only ten as failures
    wait_until(lambda: len(logged_by(two_workers, "guess")) == sum(guesses.values()), timeout=10)
    assert len(set(logged_by(two_workers, "guess"))) == 2
    assert WRONG not in two_workers.log.read_text()


def test_metrics_are_served_on_their_own_port_and_not_on_the_public_one(two_workers) -> None:
    public = httpx.get(f"{two_workers.url}/metrics", headers={"X-API-Key": KEY})
    private = httpx.get(two_workers.metrics_url)

    assert public.status_code == 404
    assert private.status_code == 200 and "sentiment_requests_total" in private.text


def test_each_worker_listens_on_its_own_socket_and_connections_spread(two_workers) -> None:
    async def connect_32() -> None:
        streams = [await asyncio.open_connection("127.0.0.1", two_workers.port) for _ in range(32)]
        try:
            for number, (reader, writer) in enumerate(streams):
                headers = {
                    "X-API-Key": SECOND_KEY,
                    "X-Request-ID": f"spread-{number}",
                    "X-Forwarded-For": "10.9.9.9",
                }
                writer.write(post_bytes("/predict", b'{"text": "hi"}', headers=headers))
                await writer.drain()
                await asyncio.wait_for(read_response(reader), 30)
        finally:
            for _, writer in streams:
                writer.close()

    asyncio.run(connect_32())

    wait_until(lambda: len(logged_by(two_workers, "spread-")) == 32, timeout=10)
    assert listening_sockets(two_workers.port) == 2
    spread = Counter(logged_by(two_workers, "spread-"))
    print(f"32 connections over the workers: {sorted(spread.values())}")
    assert sum(spread.values()) == 32 and len(spread) == 2
    assert min(spread.values()) >= 4  # hashed by the kernel; one worker taking 28 of 32 was the old way
