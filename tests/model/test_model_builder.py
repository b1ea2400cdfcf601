"""The offline DistilBERT build: deterministic, loadable through from_pretrained."""
from __future__ import annotations

import hashlib
import json

from inferq.model.builder import SIZES, build


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_build_is_deterministic(tmp_path):
    first, second = build("tiny", tmp_path / "a"), build("tiny", tmp_path / "b")
    for name in ("model.safetensors", "vocab.txt", "config.json"):
        assert digest(first / name) == digest(second / name), name


def test_build_records_that_weights_are_random(tiny_model):
    config = json.loads((tiny_model / "config.json").read_text())
    assert config["inferq_offline_build"]["weights"] == "random"
    assert config["model_type"] == "distilbert"
    assert config["id2label"] == {"0": "NEGATIVE", "1": "POSITIVE"}


def test_base_size_is_distilbert_base():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    shape = SIZES["base"]
    assert (shape["dim"], shape["n_layers"], shape["n_heads"], shape["hidden_dim"]) == (768, 6, 12, 3072)
    model = DistilBertForSequenceClassification(DistilBertConfig(**shape, num_labels=2))
    encoder = sum(p.numel() for p in model.distilbert.parameters())
    assert 66_000_000 < encoder < 67_000_000  # DistilBERT-base: 66M parameters
