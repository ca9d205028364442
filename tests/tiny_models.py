"""Build tiny extractive-QA checkpoints with random weights, saved like real ones.

They are saved with ``save_pretrained`` (safetensors) and loaded back through the same
``from_pretrained`` code path that a hub id or a downloaded folder takes.
"""

from __future__ import annotations

import string
from pathlib import Path


def make_tiny_roberta(out_dir: Path, tokenizer_dir: Path, seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    import torch
    from transformers import AutoTokenizer, RobertaConfig, RobertaForQuestionAnswering

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), model_max_length=512)
    config = RobertaConfig(
        vocab_size=tokenizer.vocab_size if hasattr(tokenizer, "vocab_size") else 50265,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=514,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    torch.manual_seed(seed)
    model = RobertaForQuestionAnswering(config)
    # Larger output weights spread the logits, so span choices are decisive rather than near-ties.
    with torch.no_grad():
        model.qa_outputs.weight.normal_(0.0, 1.0)
    model.eval()
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


WORDS = sorted(
    set(
        "the a an of in on at to is was were and or for by with from who what when where which why how "
        "did does do many much year city river king queen born found built named called located north south "
        "east west capital france normandy paris london rome river mountain music team game war peace "
        "first second third last new old big small red blue green".split()
    )
)


def make_bert_vocab(path: Path) -> Path:
    """A WordPiece vocabulary: special tokens, the words above, letters and digits (with ## forms)."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = specials + WORDS + chars + ["##" + c for c in string.ascii_lowercase + string.digits]
    path.write_text("\n".join(dict.fromkeys(vocab)) + "\n", encoding="utf-8")
    return path


def make_bert_tokenizer(out_dir: Path):
    """A BERT-style WordPiece tokenizer over the vocabulary above, built with the tokenizers library
    (so it is the same under transformers 4 and 5) and wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import PreTrainedTokenizerFast

    vocab_file = make_bert_vocab(Path(out_dir) / "vocab.txt")
    vocab = {token: i for i, token in enumerate(vocab_file.read_text(encoding="utf-8").split("\n")) if token}
    backend = Tokenizer(WordPiece(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    from tokenizers import decoders

    backend.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=512, model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def make_tiny_bert(out_dir: Path, seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    import torch
    from transformers import BertConfig, BertForQuestionAnswering

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = make_bert_tokenizer(out_dir)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=512,
    )
    torch.manual_seed(seed)
    model = BertForQuestionAnswering(config)
    with torch.no_grad():
        model.qa_outputs.weight.normal_(0.0, 1.0)
    model.eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir
