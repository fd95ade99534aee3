// k6 load test for POST /predict: `k6 run -e BASE_URL=http://127.0.0.1:8000 deploy/loadtest/k6.js`
// Thresholds fail the run (exit code 99) when p99 latency or the error rate is too high.
//
// Bodies are real tweets: the 576 tweets of the reference test split as people wrote them
// (tweets.json beside this file, made by make_tweets.py), one drawn at random per
// request. TWEETS=/path/to/file uses your own: a JSON list of strings, or a text file with one tweet
// per line (a relative path is read from this script's directory). Short fixed tweets would measure a
// faster service than real traffic meets: the cost of a request grows with its length in tokens.
import http from "k6/http";
import { check } from "k6";
import { SharedArray } from "k6/data";

const BASE_URL = __ENV.BASE_URL || "http://127.0.0.1:8000";
const TWEETS = new SharedArray("tweets", function () {
  const path = __ENV.TWEETS || "./tweets.json";
  const raw = open(path);
  const tweets = path.endsWith(".json") ? JSON.parse(raw) : raw.split("\n");
  const texts = tweets.map((tweet) => String(tweet)).filter((tweet) => tweet.trim() !== "");
  if (texts.length === 0) {
    throw new Error(`no tweets in ${path}`);
  }
  return texts;
});
const HEADERS = { "Content-Type": "application/json" };
if (__ENV.API_KEY) {
  HEADERS["X-API-Key"] = __ENV.API_KEY;
}

export const options = {
  scenarios: {
    steady: {
      executor: "constant-vus",
      vus: Number(__ENV.VUS || 32),
      duration: __ENV.DURATION || "30s",
    },
  },
  thresholds: {
    http_req_failed: ["rate<0.001"],
    "http_req_duration{name:predict}": [`p(99)<${__ENV.P99_MS || 250}`],
    checks: ["rate>0.999"],
  },
};

export default function () {
  const text = TWEETS[Math.floor(Math.random() * TWEETS.length)];
  const response = http.post(`${BASE_URL}/predict`, JSON.stringify({ text }), {
    headers: HEADERS,
    tags: { name: "predict" },
  });
  check(response, {
    "status is 200": (r) => r.status === 200,
    "has a label": (r) => r.status === 200 && r.json("sentiment.0.label") !== undefined,
  });
}
