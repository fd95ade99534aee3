"""Build a RoBERTa-base-shaped classifier with random weights, for speed and size comparisons.

The earlier service ran a fine-tuned RoBERTa-base; its weights are not reachable here, so this
builds the same architecture (12 layers, 768 hidden, 50,265-token vocabulary, 125M parameters) from
a config, with a byte-level BPE tokenizer trained on the reference tweets so that token counts are
realistic. Its accuracy means nothing: benchmark it with ``--speed-only``.

Usage: python scripts/build_random_roberta.py DATA OUT
"""

from __future__ import annotations

import sys
from pathlib import Path

from sentiment_api.data import TEXT, load_splits
from sentiment_api.model_card import DataRecord, ModelCard
from sentiment_api.tokenization import TweetTokenizer
from sentiment_api.training.base import StartingPoint, save_checkpoint

# The tokenizer trainer lives with the tiny test models, also built from a config: not in the package
TESTS = Path(__file__).resolve().parents[1] / "tests"


def main(data: Path, out: Path) -> None:
    import torch
    from transformers import RobertaConfig, RobertaForSequenceClassification

    sys.path.insert(0, str(TESTS))
    from tiny_models import train_roberta_tokenizer

    prepared, splits = load_splits(data)
    labels = prepared.labels
    tokenizer, hf_tokenizer = train_roberta_tokenizer(prepared.frame[TEXT].tolist(), vocab_size=8000)
    torch.manual_seed(0)
    config = RobertaConfig(  # roberta-base's shape; the vocabulary size sets the embedding size
        vocab_size=50265,
        max_position_embeddings=514,
        type_vocab_size=1,
        pad_token_id=1,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    model = RobertaForSequenceClassification(config).eval()
    card = ModelCard(
        name="random-roberta-base-shaped",
        labels=labels,
        normaliser="legacy@1",
        max_length=128,
        pad_token_id=1,
        base_model="RoBERTa-base shape, random weights (speed and size only)",
        data=DataRecord(file=prepared.source.name, sha256=prepared.sha256, splits=splits.sizes()),
    )
    save_checkpoint(StartingPoint(model, hf_tokenizer, TweetTokenizer(tokenizer, 128, 1)), card, out)
    print(f"wrote {out} ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters)")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
