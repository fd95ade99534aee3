"""Tiny Hugging Face models built from a config, with tokenizers trained on the spot.

They stand in for hub models: the code under test loads them through the same
``from_pretrained`` calls it uses for a hub id, from a local directory.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TEXT_COLUMN = "tweet_text"
LABEL_COLUMN = "is_there_an_emotion_directed_at_a_brand_or_product"
LABELS = ["Negative emotion", "No emotion toward brand or product", "Positive emotion"]
WORDS = {
    "Negative emotion": "hate broken awful crash slow worst angry fail bug sad terrible".split(),  # noqa: SIM905
    "No emotion toward brand or product": "store line party panel session map talk room".split(),  # noqa: SIM905
    "Positive emotion": "love great awesome cool best happy amazing win nice fun".split(),  # noqa: SIM905
}
SHARED = "ipad iphone google apple sxsw austin app new launch today the a at with for".split()  # noqa: SIM905


def labelled_rows(per_label: int = 20, seed: int = 0) -> list[tuple[str, str]]:
    """Distinct tweets whose words give their label away, so a tiny model can learn something."""
    rng = random.Random(seed)
    rows = []
    for i in range(per_label):
        for label, words in WORDS.items():
            picked = rng.sample(words, 3) + rng.sample(SHARED, 5)
            rng.shuffle(picked)
            rows.append((f"{' '.join(picked)} #{label.split()[0].lower()}{i}", label))
    return rows


def _texts() -> list[str]:
    return [text for text, _ in labelled_rows(40)]


def build_tiny_bert(directory: Path) -> Path:
    """A 2-layer BERT with a WordPiece tokenizer."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(_texts(), trainers.WordPieceTrainer(vocab_size=300, special_tokens=special))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=0,
    )
    BertForSequenceClassification(config).save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory


def train_roberta_tokenizer(texts: Sequence[str], vocab_size: int) -> tuple[Any, Any]:
    """A byte-level BPE tokenizer with RoBERTa's special tokens, trained on ``texts``.

    For models built from a config rather than downloaded: the tiny test RoBERTa, and the
    RoBERTa-base-shaped benchmark model of ``bench/engine/random_roberta.py``. Returns the
    ``tokenizers.Tokenizer`` and its ``transformers`` wrapper.
    """
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
    wrapper = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        cls_token="<s>",
        sep_token="</s>",
        mask_token="<mask>",
    )
    return tokenizer, wrapper


def build_tiny_roberta(directory: Path) -> Path:
    """A 2-layer RoBERTa with a byte-level BPE tokenizer."""
    from transformers import RobertaConfig, RobertaForSequenceClassification

    tokenizer, wrapper = train_roberta_tokenizer(_texts(), vocab_size=400)
    config = RobertaConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=66,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        type_vocab_size=1,
    )
    RobertaForSequenceClassification(config).save_pretrained(directory)
    wrapper.save_pretrained(directory)
    return directory


def write_rows(path: Path, rows: list[tuple[str, str]]) -> Path:
    """A CSV with the reference file's column names."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([TEXT_COLUMN, LABEL_COLUMN])
        writer.writerows(rows)
    return path


# A corpus' own label names, and how they map onto the tiny models' labels.
MAP = {"negative": LABELS[0], "neutral": LABELS[1], "positive": LABELS[2]}


def write_corpus(
    path: Path, rows: list[tuple[str, str]], columns: tuple[str, str] = ("text", "label")
) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)
    return path


def with_temperature(package: Path, directory: Path, temperature: float) -> Path:
    """A copy of ``package`` in ``directory`` whose card says its logits are divided by ``temperature``."""
    import shutil

    from sentiment_api.core.calibration import CalibrationRecord
    from sentiment_api.core.model_card import ModelCard

    copy = directory / f"package-t{temperature:g}"
    shutil.copytree(package, copy)
    card = ModelCard.load(copy)
    card.calibration = CalibrationRecord(temperature=temperature, fitted_on="a test")
    card.save(copy)
    return copy
