// k6 load test for POST /predict: `k6 run -e BASE_URL=http://127.0.0.1:8000 deploy/loadtest/k6.js`
// Thresholds fail the run (exit code 99) when p99 latency or the error rate is too high.
import http from "k6/http";
import { check } from "k6";

const BASE_URL = __ENV.BASE_URL || "http://127.0.0.1:8000";
const TWEETS = [
  "I love my new iPad, the battery lasts forever #sxsw",
  "Google's party line is two hours long. Not worth it.",
  "Heading to the Apple pop-up store on Congress Ave",
  "the new app keeps crashing, so frustrating",
  "Great panel on mobile design at #sxsw this morning",
];

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
    headers: { "Content-Type": "application/json" },
    tags: { name: "predict" },
  });
  check(response, {
    "status is 200": (r) => r.status === 200,
    "has a label": (r) => r.status === 200 && r.json("sentiment.0.label") !== undefined,
  });
}
