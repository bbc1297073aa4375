"""Reconnect backoff (exponential, full jitter, capped) and channel name hygiene."""

from __future__ import annotations

import itertools
import random
import statistics

import pytest

from reelhouse.archive.twitch.irc_client import TwitchChatClient, normalize_channel, reconnect_backoff


def test_ceiling_doubles_then_caps():
    policy = reconnect_backoff(base=0.5, cap=30.0)
    assert [policy.ceiling(n) for n in range(1, 9)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert policy.ceiling(10_000) == 30.0  # no float overflow after days of retrying


def test_delays_are_jittered_within_the_ceiling_and_grow():
    policy = reconnect_backoff(base=1.0, cap=64.0)
    rng = random.Random(1234)
    samples = {attempt: [policy.delay(attempt, rng) for _ in range(400)] for attempt in range(1, 9)}
    for attempt, delays in samples.items():
        assert all(0.0 <= d <= policy.ceiling(attempt) for d in delays)
        # Full jitter: spread over the whole [0, ceiling] range, not clustered at the top.
        assert min(delays) < 0.1 * policy.ceiling(attempt) < 0.9 * policy.ceiling(attempt) < max(delays)
        assert len(set(delays)) == len(delays)
    means = [statistics.fmean(samples[a]) for a in range(1, 8)]
    assert all(later > earlier * 1.5 for earlier, later in itertools.pairwise(means))
    assert statistics.fmean(samples[8]) == pytest.approx(32.0, rel=0.15)


def test_seeded_rng_makes_the_schedule_reproducible():
    policy = reconnect_backoff(base=0.1, cap=5.0)
    first = [policy.delay(n, random.Random(7)) for n in range(1, 11)]
    again = [policy.delay(n, random.Random(7)) for n in range(1, 11)]
    assert first == again
    rng_a, rng_b = random.Random(7), random.Random(8)
    assert [policy.delay(n, rng_a) for n in range(1, 11)] != [policy.delay(n, rng_b) for n in range(1, 11)]


@pytest.mark.parametrize(
    ("raw", "login"), [("#SomeChannel", "somechannel"), (" dallas ", "dallas"), ("a_b_9", "a_b_9")]
)
def test_normalize_channel(raw, login):
    assert normalize_channel(raw) == login


@pytest.mark.parametrize("raw", ["", "#", "two words", "a,b", "x" * 26, "#chan\r\nQUIT"])
def test_normalize_channel_rejects_what_is_not_a_login(raw):
    with pytest.raises(ValueError):
        normalize_channel(raw)


def test_token_requires_nick_and_repr_hides_the_token():
    with pytest.raises(ValueError):
        TwitchChatClient(["dallas"], token="abc")
    with pytest.raises(ValueError) as refused:
        TwitchChatClient(["dallas"], token="abc\r\nPRIVMSG #x :spam", nick="bot")
    assert "abc" not in str(refused.value)
    client = TwitchChatClient(["Dallas"], token="s3cr3t-token-value", nick="Bot")
    assert "s3cr3t" not in repr(client)
    assert client.channels == {"dallas"}
