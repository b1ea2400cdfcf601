"""Decide which model the local stack serves: the configured hub model if it can be had, else the offline one.

Decision: a hub id counts as available when its files are in the local
Hugging Face cache, or when the hub answers a metadata request within
PROBE_SECONDS. With HF_HUB_OFFLINE=1 (or TRANSFORMERS_OFFLINE=1) the hub is
not asked at all. The probe runs in a daemon thread with a hard deadline, so
a machine without a network (or with a DNS that never answers) waits at most
PROBE_SECONDS before falling back.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from inferq.model.loader import OFFLINE_PREFIX

log = logging.getLogger(__name__)

PROBE_SECONDS = 5.0
"""Longest wait for the hub before deciding there is no network."""

FALLBACK_MODEL = "offline:base"
"""What the stack serves without the hub: DistilBERT-base, random weights (built once)."""


@dataclass(frozen=True)
class ModelChoice:
    """The model the workers will load, and why."""

    reference: str
    fallback: bool
    reason: str


def is_hub_id(reference: str) -> bool:
    """True when reference names a hub repository rather than a directory or an offline build."""
    return not reference.startswith(OFFLINE_PREFIX) and not os.path.isdir(reference)


def cached(repo_id: str) -> bool:
    """True when the hub model's config and weights are in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    def has(name: str) -> bool:
        return isinstance(try_to_load_from_cache(repo_id, name), str)

    return has("config.json") and (has("model.safetensors") or has("pytorch_model.bin"))


def hub_answers(repo_id: str, timeout: float = PROBE_SECONDS) -> bool:
    """True when the hub answers for repo_id within timeout seconds (DNS included)."""
    import requests
    from huggingface_hub import constants

    answer: list[bool] = []

    def probe() -> None:
        try:
            response = requests.head(f"{constants.ENDPOINT}/api/models/{repo_id}", timeout=timeout)
            answer.append(response.status_code == 200)
        except requests.RequestException:
            answer.append(False)

    thread = threading.Thread(target=probe, name="hub-probe", daemon=True)
    thread.start()
    # requests' timeout does not bound name resolution; the join does.
    thread.join(timeout)
    return bool(answer and answer[0])


def choose(reference: str, offline: bool) -> ModelChoice:
    """Keep a directory or offline build as is; keep a hub id only if it can be loaded."""
    if not is_hub_id(reference):
        return ModelChoice(reference, False, "configured")
    if reference.startswith(("/", "./", "../", "~")):
        # A path that is not there is a mistake to report, not a hub id to fall back from.
        raise SystemExit(f"inferq-stack: INFERQ_MODEL={reference} is not a directory")
    if cached(reference):
        return ModelChoice(reference, False, "in the local Hugging Face cache")
    if offline:
        return ModelChoice(FALLBACK_MODEL, True, f"{reference} is not cached and HF_HUB_OFFLINE is set")
    if hub_answers(reference):
        return ModelChoice(reference, False, "the Hugging Face hub answers")
    return ModelChoice(FALLBACK_MODEL, True,
                       f"{reference} is not in the local cache and the Hugging Face hub "
                       f"did not answer (no network?)")


def prepare(choice: ModelChoice, cache_dir: str) -> Path | None:
    """Build an offline model now (once), so N workers do not all start by building it."""
    if not choice.reference.startswith(OFFLINE_PREFIX):
        return None
    from inferq.model.builder import build

    size = choice.reference[len(OFFLINE_PREFIX):]
    return build(size, Path(cache_dir) / f"offline-{size}")


def banner(choice: ModelChoice, built: Path | None) -> str:
    """A banner that cannot be missed when the stack serves a model with random weights."""
    if not choice.fallback:
        return f"model: {choice.reference} ({choice.reason})"
    width = 78
    lines = [
        "WARNING: NOT A TRAINED MODEL",
        f"{choice.reason}.",
        f"Serving {choice.reference}: DistilBERT-base architecture with RANDOM weights"
        + (f" ({built})" if built else "") + ".",
        "Labels and probabilities are meaningless: fine for load tests and demos only.",
        "For real results: run where the hub is reachable, or set INFERQ_MODEL to a",
        "directory holding a trained model.",
    ]
    rule = "!" * width
    return "\n".join([rule, *(f"!! {line}" for line in lines), rule])
