"""Locust load test for POST /predict.

    locust -f deploy/loadtest/locustfile.py --host http://127.0.0.1:8000 --headless -u 32 -r 8 -t 30s

The run exits non-zero when the error rate passes 0.1 % or p99 latency passes P99_MS (default 250).
"""

from __future__ import annotations

import os
import random

from locust import HttpUser, between, events, task

TWEETS = [
    "I love my new iPad, the battery lasts forever #sxsw",
    "Google's party line is two hours long. Not worth it.",
    "Heading to the Apple pop-up store on Congress Ave",
    "the new app keeps crashing, so frustrating",
    "Great panel on mobile design at #sxsw this morning",
]
P99_MS = float(os.environ.get("P99_MS", "250"))


class TweetUser(HttpUser):
    """One client sending single-tweet predictions back to back."""

    wait_time = between(0, 0.01)

    @task
    def predict(self) -> None:
        with self.client.post("/predict", json={"text": random.choice(TWEETS)}, catch_response=True) as r:
            if r.status_code != 200 or "sentiment" not in r.json():
                r.failure(f"status {r.status_code}")


@events.quitting.add_listener
def _thresholds(environment, **_: object) -> None:
    stats = environment.stats.total
    if stats.fail_ratio > 0.001 or stats.get_response_time_percentile(0.99) > P99_MS:
        environment.process_exit_code = 1
