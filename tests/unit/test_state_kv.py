"""The state KV codec: every instance name gets its own valid key, and every key parses back to it."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from statemachine import Progress, Reason, State, StateEvent
from tts_actor.fleet.state_kv import (
    StateKey,
    decode_event,
    decode_instance,
    encode_event,
    encode_instance,
    instance_entry_of,
    instance_key,
    parse_key,
    shared_key,
)

KV_KEY = re.compile(r"^[-/_=.a-zA-Z0-9]+$")  # what nats-server and nats.py accept as a KV key
NAMES = st.text(min_size=1, max_size=60)  # any unicode: colons, spaces, dots, '=', emoji, surrogate-free


@given(NAMES)
def test_every_instance_name_round_trips_through_a_valid_two_token_key(instance: str) -> None:
    key = instance_key("piper", instance)
    assert KV_KEY.match(key)
    assert key.count(".") == 1  # one token for the backend, one for the instance: no wildcards, no empty tokens
    assert parse_key(key) == StateKey("piper", instance)


@given(NAMES, NAMES)
def test_distinct_names_never_share_a_key(a: str, b: str) -> None:
    assert (encode_instance(a) == encode_instance(b)) == (a == b)


@pytest.mark.parametrize(
    ("instance", "token"),
    [
        ("kv-0", "kv-0"),  # safe names keep today's key
        ("a", "a"),
        ("tts:1", "tts=3A1"),
        ("tts_1", "tts_1"),  # no longer the same key as tts:1
        ("eu west", "eu=20west"),
        ("host.example.com", "host=2Eexample=2Ecom"),
        ("a=b", "a=3Db"),
        ("zürich", "z=C3=BCrich"),
    ],
)
def test_known_encodings(instance: str, token: str) -> None:
    assert encode_instance(instance) == token
    assert decode_instance(token) == instance


@pytest.mark.parametrize("token", ["a=3", "a=zz", "a=41", "a.b", "=FF", "a=3a", ""])
def test_tokens_no_name_encodes_to_are_refused(token: str) -> None:
    assert decode_instance(token) is None  # short or lower-case escapes, an escaped safe byte, bad UTF-8, a dot


def test_keys_of_both_kinds_parse_and_others_do_not() -> None:
    assert parse_key(shared_key("mms")) == StateKey("mms") and StateKey("mms").shared
    assert str(StateKey("mms", "eu west")) == "mms.eu=20west"
    assert parse_key("piper.a.b") is None and parse_key("bad key") is None and parse_key(".x") is None
    assert instance_entry_of("piper.tts=3A1", "piper")
    assert not instance_entry_of("piper", "piper") and not instance_entry_of("mms.a", "piper")
    with pytest.raises(ValueError):
        instance_key("piper", "")
    with pytest.raises(ValueError):
        shared_key("pi.per")


def test_an_event_round_trips_and_garbage_decodes_to_none() -> None:
    event = StateEvent(
        "piper",
        "tts:1",
        State.DOWNLOADING,
        State.LOADED,
        Reason.LOADED_AFTER_DOWNLOAD,
        None,
        Progress(5, 10),
        7,
        "2025-01-01T00:00:00Z",
    )
    assert decode_event(encode_event(event)) == event
    for value in (None, b"", b"not json", b"[]", b'{"backend": "piper"}'):
        assert decode_event(value) is None
