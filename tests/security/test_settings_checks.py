"""Reliability and security settings: checked at start-up, safe by default."""
from __future__ import annotations

import pytest

from inferq.settings import Api, ApiKeys, ConfigError, Durability, Worker, load


def test_defaults_are_safe():
    assert load(Worker, {}).test_faults is False  # fault injection is never on unless asked for
    assert load(ApiKeys, {}).accepted == ()
    assert load(Durability, {}).appendfsync == "always"  # nothing accepted is lost when Redis crashes
    assert load(Worker, {}).max_deliveries == 3 and load(Api, {}).max_queue_depth == 10000


def test_short_api_key_refused_without_echoing_it():
    with pytest.raises(ConfigError) as info:
        load(Api, {"INFERQ_API_KEYS": "a-long-enough-key-123,tiny"})
    assert "tiny" not in str(info.value) and "a-long-enough" not in str(info.value)


def test_api_keys_parsed():
    one, two = "k" + "1" * 20, "k" + "2" * 20
    assert load(Api, {"INFERQ_API_KEYS": f" {one} , {two}"}).keys.accepted == (one, two)


@pytest.mark.parametrize("section,env", [(Durability, {"INFERQ_REDIS_APPENDFSYNC": "sometimes"}),
                                         (Worker, {"INFERQ_TEST_FAULTS": "maybe"}),
                                         (Worker, {"INFERQ_MAX_DELIVERIES": "0"}),
                                         (Api, {"INFERQ_MAX_QUEUE_DEPTH": "0"})])
def test_bad_values_refused(section, env):
    with pytest.raises(ConfigError):
        load(section, env)


def test_redelivery_scan_follows_the_visibility_timeout():
    from inferq import celeryconfig
    from inferq.settings import Delivery, current

    options = celeryconfig.broker_transport_options
    assert options["unacked_restore_interval"] == max(1, min(10, current(Delivery).visibility_timeout // 4))
    assert celeryconfig.accept_content == ["json"] and celeryconfig.task_acks_late
