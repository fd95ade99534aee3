"""Locust load test for POST /predict: `locust -f deploy/loadtest/locustfile.py --host http://127.0.0.1:8000`.

Bodies are real tweets: the 576 tweets of the reference test split as people wrote them (tweets.json
beside this file, made by scripts/make_loadtest_tweets.py), one drawn at random per request.
TWEETS=/path/to/file uses your own: a JSON list of strings, or a text file with one tweet per line.
API_KEY sends a key; P99_MS (250) and a 0.1 % failure ratio are the thresholds that fail the run.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from locust import HttpUser, between, events, task

P99_MS = float(os.environ.get("P99_MS", "250"))
HEADERS = {"X-API-Key": os.environ["API_KEY"]} if os.environ.get("API_KEY") else {}


def load_tweets(path: Path) -> list[str]:
    """Tweets from a JSON list of strings, or from a text file with one per line."""
    text = path.read_text(encoding="utf-8")
    tweets = json.loads(text) if path.suffix == ".json" else text.splitlines()
    tweets = [str(tweet) for tweet in tweets if str(tweet).strip()]
    if not tweets:
        raise SystemExit(f"no tweets in {path}")
    return tweets


TWEETS = load_tweets(Path(os.environ.get("TWEETS") or Path(__file__).with_name("tweets.json")))


class TweetUser(HttpUser):
    """One client sending single-tweet predictions back to back."""

    wait_time = between(0, 0.01)

    @task
    def predict(self) -> None:
        body = {"text": random.choice(TWEETS)}
        with self.client.post("/predict", json=body, headers=HEADERS, catch_response=True) as r:
            if r.status_code != 200 or "sentiment" not in r.json():
                r.failure(f"status {r.status_code}")


@events.quitting.add_listener
def _thresholds(environment, **_: object) -> None:
    stats = environment.stats.total
    if stats.fail_ratio > 0.001 or stats.get_response_time_percentile(0.99) > P99_MS:
        environment.process_exit_code = 1
