"""A plain FastAPI + ONNX Runtime server: the baseline our service is compared with.

What a team would write in an afternoon: one ONNX Runtime session with every core, one request at a
time through it (no batching, no streams), the same ``model.onnx`` and ``tokenizer.json`` as our
package and the same text normalisation, so both servers do the same work per tweet.

``--exact-int8`` loads the model the way our engine does on a CPU without VNNI (AVX2 only), where
ONNX Runtime's uint8 x int8 products saturate: through ``rowwise.exact_int8``, so both servers also
give the same answers there (and pay the same for them). Without it, the server is what a team would
get from ONNX Runtime as it comes.

Usage: python bench/server/plain_server.py MODEL_DIR [--port 8098] [--exact-int8]   (wrk.sh runs it)
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from tokenizers import Tokenizer

from sentiment_api.core.rowwise import exact_int8_model
from sentiment_api.core.text import get_normaliser


class Request(BaseModel):
    text: str


def build_app(model_dir: Path, exact_int8: bool = False) -> FastAPI:
    card = json.loads((model_dir / "model_card.json").read_text())
    labels, normalise = card["labels"], get_normaliser(card["normaliser"])
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(card["max_length"])
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    model: str | bytes = str(model_dir / "model.onnx")
    rewritten = exact_int8_model(model) if exact_int8 else None
    if rewritten is not None:
        model = rewritten[0]
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    app = FastAPI()

    @app.get("/")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/predict")
    def predict(request: Request) -> dict[str, object]:  # a plain def: FastAPI runs it in its thread pool
        ids = np.array([tokenizer.encode(normalise(request.text)).ids], dtype=np.int64)
        logits = session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0][0]
        exp = np.exp(logits - logits.max())
        probabilities = exp / exp.sum()
        best = int(probabilities.argmax())
        return {"sentiment": [{"label": labels[best], "score": float(probabilities[best])}]}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--port", type=int, default=8098)
    parser.add_argument(
        "--exact-int8", action="store_true", help="uint8 x uint8 products, as our engine loads them on AVX2"
    )
    args = parser.parse_args()
    uvicorn.run(
        build_app(args.model, args.exact_int8),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
