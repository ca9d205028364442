"""squadkit train learns: a tiny RoBERTa from random weights masters a generated reading task.

The task (also used by the other train tests, which import its helpers): a context lists facts
"<name> likes <thing> ." and the question asks "what does <name> like ?". The answer is the
span "<name> likes <thing>" when the name is in the context, and no answer otherwise (about
half the questions). Answering needs reading: the model must find the token of the context
that matches the question's name (and where that fact ends); nothing can be memorised, as
names and things are drawn afresh for every context. The tokenizer is a WordLevel one built
here, so no shared data is needed.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

NAMES = [f"{a}{b}" for a in ("ka", "lo", "mi", "ne") for b in ("bo", "da", "fi")]
THINGS = ["red", "blue", "green", "tea", "jazz", "chess", "rice", "snow", "gold", "wine", "salt", "rain",
          "fish", "milk", "oak", "sand"]
FILLER = ["what", "does", "like", "likes", ".", "?"]


def make_task_tokenizer(folder: Path):
    """A RoBERTa-style (<s> q </s></s> c </s>) WordLevel tokenizer over the task's words."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    vocab = {w: i for i, w in enumerate(specials + NAMES + THINGS + FILLER)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
        pad_token="<pad>", unk_token="<unk>", model_max_length=128, model_input_names=["input_ids", "attention_mask"])
    fast.save_pretrained(folder)
    return fast


def make_task_model(folder: Path, seed: int = 0, hidden: int = 64, layers: int = 2, dropout: float = 0.0) -> Path:
    """A randomly initialised RoBERTa QA model (and the task tokenizer) saved in ``folder``."""
    import torch
    from transformers import RobertaConfig, RobertaForQuestionAnswering

    tokenizer = make_task_tokenizer(folder)
    config = RobertaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
        intermediate_size=hidden * 2, max_position_embeddings=130, type_vocab_size=1, pad_token_id=1,
        bos_token_id=0, eos_token_id=2, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    torch.manual_seed(seed)
    RobertaForQuestionAnswering(config).save_pretrained(folder)
    return folder


def task_records(n_contexts: int, seed: int, questions_per_context: int = 2) -> list[dict]:
    """Flat (``datasets``-style) records of the task; about half are unanswerable."""
    rng = random.Random(seed)
    records = []
    for c in range(n_contexts):
        names = rng.sample(NAMES, rng.randint(2, 4) + 1)
        present, absent = names[:-1], names[-1]
        context, spans = "", {}
        for name in present:
            fact = f"{name} likes {rng.choice(THINGS)}"
            spans[name] = (len(context), fact)
            context += fact + " . "
        context = context.strip()
        for q in range(questions_per_context):
            rec = {"id": f"s{seed}-c{c}-q{q}", "title": "task", "context": context}
            if rng.random() < 0.5:
                name = rng.choice(present)
                start, text = spans[name]
                rec.update(question=f"what does {name} like ?", answers={"text": [text], "answer_start": [start]})
            else:
                rec.update(question=f"what does {absent} like ?", answers={"text": [], "answer_start": []})
            records.append(rec)
    return records


def to_squad(records: list[dict]) -> dict:
    """The same records in the official nested SQuAD v2.0 layout."""
    paragraphs: dict[str, list] = {}
    for r in records:
        qa = {"id": r["id"], "question": r["question"], "is_impossible": not r["answers"]["text"],
              "answers": [{"text": t, "answer_start": s} for t, s in zip(r["answers"]["text"], r["answers"]["answer_start"])]}
        paragraphs.setdefault(r["context"], []).append(qa)
    return {"version": "v2.0", "data": [{"title": "task", "paragraphs": [{"context": c, "qas": q} for c, q in paragraphs.items()]}]}


def write_task_data(path: Path, n_contexts: int, seed: int, flat: bool = False) -> Path:
    records = task_records(n_contexts, seed)
    if flat:
        path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    else:
        path.write_text(json.dumps(to_squad(records)), encoding="utf-8")
    return path


@pytest.fixture
def one_thread():
    """Tiny models train several times faster on one thread than on two busy cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_tiny_roberta_learns_the_reading_task(tmp_path, one_thread):
    import time

    from squadkit.pipeline import QuestionAnswerer
    from squadkit.train import TrainConfig, train

    base = make_task_model(tmp_path / "base", seed=0)
    # training data in the flat `datasets` form, held-out data in the official layout
    train_file = write_task_data(tmp_path / "train.jsonl", 4000, seed=1, flat=True)
    dev_file = write_task_data(tmp_path / "dev.json", 150, seed=2)
    start = time.perf_counter()
    result = train(TrainConfig(
        model_name_or_path=str(base), output_dir=str(tmp_path / "out"), train_file=str(train_file),
        predict_file=str(dev_file), do_train=True, do_eval=True, version_2_with_negative=True,
        max_seq_length=64, doc_stride=32, per_gpu_train_batch_size=32, learning_rate=1e-3, num_train_epochs=8,
        warmup_ratio=0.1, weight_decay=0.01, save_steps=0, logging_steps=250, quiet=True))
    elapsed = time.perf_counter() - start
    ev = result.eval_results
    print(f"learned in {elapsed:.1f} s: {json.dumps(ev)}")
    assert ev["HasAns_total"] > 100 and ev["NoAns_total"] > 100
    assert ev["exact"] >= 90, ev
    assert ev["HasAns_exact"] >= 90, ev
    assert ev["NoAns_exact"] >= 90, ev
    # the loss really went down, as logged
    log = [json.loads(line) for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert losses[-1] < 0.2 * losses[0]
    # the saved model answers through squadkit's pipeline (held-out contexts, never seen)
    qa = QuestionAnswerer(str(tmp_path / "out"))
    got = qa(question="what does mibo like ?", context="kada likes tea . mibo likes jazz . nefi likes oak .")
    assert got["answer"] == "mibo likes jazz"
    none = qa(question="what does lobo like ?", context="kada likes tea . mibo likes jazz .",
              handle_impossible_answer=True)
    assert none["answer"] == ""
