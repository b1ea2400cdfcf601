"""Which model the stack serves: the hub model when it can be had, else the offline base with a banner."""
from __future__ import annotations

from inferq.stack import model_choice


def test_directory_and_offline_builds_are_kept(tmp_path):
    kept = model_choice.ModelChoice(str(tmp_path), False, "configured")
    assert model_choice.choose(str(tmp_path), offline=True) == kept
    assert not model_choice.choose("offline:tiny", offline=False).fallback


def test_hub_model_falls_back_without_asking_when_offline(monkeypatch):
    monkeypatch.setattr(model_choice, "cached", lambda repo: False)
    monkeypatch.setattr(model_choice, "hub_answers", lambda repo: (_ for _ in ()).throw(AssertionError("asked")))
    choice = model_choice.choose("distilbert-base-uncased-finetuned-sst-2-english", offline=True)
    assert choice.reference == model_choice.FALLBACK_MODEL and choice.fallback
    banner = model_choice.banner(choice, None)
    assert "RANDOM weights" in banner and "NOT A TRAINED MODEL" in banner


def test_hub_model_kept_when_cached_or_reachable(monkeypatch):
    monkeypatch.setattr(model_choice, "cached", lambda repo: True)
    assert model_choice.choose("org/model", offline=True).reference == "org/model"
    monkeypatch.setattr(model_choice, "cached", lambda repo: False)
    monkeypatch.setattr(model_choice, "hub_answers", lambda repo: True)
    assert model_choice.choose("org/model", offline=False).reference == "org/model"
    monkeypatch.setattr(model_choice, "hub_answers", lambda repo: False)
    assert model_choice.choose("org/model", offline=False).fallback


def test_hub_probe_is_bounded_without_a_network():
    # Nothing listens on port 1 of loopback: the probe says no, quickly, instead of hanging.
    import time

    from huggingface_hub import constants

    original = constants.ENDPOINT
    constants.ENDPOINT = "http://127.0.0.1:1"
    try:
        started = time.monotonic()
        assert model_choice.hub_answers("org/model", timeout=2) is False
        assert time.monotonic() - started < 3
    finally:
        constants.ENDPOINT = original


def test_a_missing_model_directory_is_an_error_not_a_fallback(tmp_path):
    import pytest

    with pytest.raises(SystemExit, match="is not a directory"):
        model_choice.choose(str(tmp_path / "absent"), offline=True)
