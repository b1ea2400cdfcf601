"""Reliability and security settings: checked at start-up, safe by default."""
from __future__ import annotations

import pytest

from inferq.celeryconfig import ConfigError, load_settings


def test_defaults_are_safe():
    settings = load_settings({})
    assert settings.test_faults is False  # fault injection is never on unless asked for
    assert settings.api_keys == ()
    assert settings.redis_appendfsync == "everysec"
    assert settings.max_deliveries == 3 and settings.max_queue_depth == 10000


def test_short_api_key_refused_without_echoing_it():
    with pytest.raises(ConfigError) as info:
        load_settings({"INFERQ_API_KEYS": "a-long-enough-key-123,tiny"})
    assert "tiny" not in str(info.value) and "a-long-enough" not in str(info.value)


def test_api_keys_parsed():
    settings = load_settings({"INFERQ_API_KEYS": " k" + "1" * 20 + " , k" + "2" * 20})
    assert settings.api_keys == ("k" + "1" * 20, "k" + "2" * 20)


@pytest.mark.parametrize("env", [{"INFERQ_REDIS_APPENDFSYNC": "sometimes"}, {"INFERQ_TEST_FAULTS": "maybe"},
                                 {"INFERQ_MAX_DELIVERIES": "0"}, {"INFERQ_MAX_QUEUE_DEPTH": "0"}])
def test_bad_values_refused(env):
    with pytest.raises(ConfigError):
        load_settings(env)


def test_redelivery_scan_follows_the_visibility_timeout():
    from inferq import celeryconfig

    options = celeryconfig.broker_transport_options
    assert options["unacked_restore_interval"] == max(1, min(10, celeryconfig.SETTINGS.visibility_timeout // 4))
    assert celeryconfig.accept_content == ["json"] and celeryconfig.task_acks_late
