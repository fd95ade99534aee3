"""Build a RoBERTa-base-shaped classifier with random weights, for speed and size comparisons.

The earlier service ran a fine-tuned RoBERTa-base; its weights are not reachable here, so this
builds the same architecture (12 layers, 768 hidden, 50,265-token vocabulary, 125M parameters) from
a config, with a byte-level BPE tokenizer trained on the reference tweets so that token counts are
realistic. Its accuracy means nothing: benchmark it with ``--speed-only``.

Usage: python bench/engine/random_roberta.py DATA OUT   (make bench-roberta)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sentiment_api.core.model_card import DataRecord, ModelCard
from sentiment_api.core.tokenization import TweetTokenizer
from sentiment_api.data.tweets import TEXT, load_splits
from sentiment_api.training.base import StartingPoint, save_checkpoint


def train_roberta_tokenizer(texts: Sequence[str], vocab_size: int) -> tuple[Any, Any]:
    """A byte-level BPE tokenizer with RoBERTa's special tokens, trained on ``texts``: the
    ``tokenizers.Tokenizer`` and its ``transformers`` wrapper (as the tiny test RoBERTa's is made)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(list(texts), trainer)
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
    specials |= {"cls_token": "<s>", "sep_token": "</s>", "mask_token": "<mask>"}
    return tokenizer, PreTrainedTokenizerFast(tokenizer_object=tokenizer, **specials)


def main(data: Path, out: Path) -> None:
    import torch
    from transformers import RobertaConfig, RobertaForSequenceClassification

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
    if len(sys.argv) != 3 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if sys.argv[1:] in (["-h"], ["--help"]) else 2)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
