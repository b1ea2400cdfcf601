"""The plain inference function and model loading, without a broker."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from inferq.model.inference import classify, length_sorted_batches
from inferq.model.loader import load


@pytest.fixture(scope="module", params=["fp32", "int8"])
def loaded(request, tiny_model):
    return load(str(tiny_model), "", request.param, torch_threads=1)


def test_probabilities_sum_to_one_and_labels_come_from_the_config(loaded, tiny_model):
    config = json.loads((tiny_model / "config.json").read_text())
    labels = set(config["id2label"].values())
    results = classify(loaded, ["a fine day", "nothing works at all", "ok"])
    assert len(results) == 3
    for result in results:
        assert set(result["probabilities"]) == labels
        assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
        assert result["label"] == max(result["probabilities"], key=result["probabilities"].get)


def test_batched_results_match_one_at_a_time_in_input_order(loaded):
    texts = ["long " * 50, "one", "a few more words", "mid sized text of words " * 3, "x"]
    together = classify(loaded, texts, max_batch=2)
    alone = [classify(loaded, [t])[0] for t in texts]
    for a, b in zip(together, alone, strict=True):
        for label in a["probabilities"]:
            assert a["probabilities"][label] == pytest.approx(b["probabilities"][label], abs=1e-4)


def test_text_longer_than_the_model_limit_is_truncated_not_rejected(loaded):
    [result] = classify(loaded, ["word " * 5000])
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)


def test_empty_input_gives_empty_output(loaded):
    assert classify(loaded, []) == []


def test_length_sorted_batches_cover_every_index_once():
    batches = length_sorted_batches([5, 1, 9, 3, 7], max_batch=2)
    assert sorted(i for b in batches for i in b) == [0, 1, 2, 3, 4]
    assert all(len(b) <= 2 for b in batches)
    assert batches[0] == [1, 3]  # the two shortest together


def test_model_info_names_the_model_and_says_weights_are_random(loaded, tiny_model):
    assert loaded.info["name"] == str(tiny_model)
    assert loaded.info["weights"] == "random"


def test_hub_model_without_network_names_the_offline_build_command(tmp_path):
    # HF_HUB_OFFLINE and an empty cache: exactly what a machine without network sees.
    code = ("from inferq.model.loader import load\n"
            "load('distilbert-base-uncased-finetuned-sst-2-english', '', 'fp32')")
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path), "REDIS_URL": "redis://127.0.0.1:1/0",
           "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "ModelUnavailable" in done.stderr
    assert "inferq-build-model base" in done.stderr
