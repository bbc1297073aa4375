"""IRC line grammar: escaping, parsing edge cases, building lines, and robustness properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reelhouse.archive.twitch.chat_events import ChatMessage, parse_event, to_event
from reelhouse.archive.twitch.irc_message import (
    IrcMessage,
    IrcParseError,
    escape_tag_value,
    format_line,
    parse_line,
    parse_tags,
    unescape_tag_value,
)

tag_keys = st.from_regex(r"\A\+?([a-z0-9.-]{1,8}/)?[A-Za-z0-9-]{1,16}\Z")
# IRC forbids NUL on the wire; everything else must survive escaping.
tag_values = st.text(st.characters(blacklist_characters="\0", codec="utf-8"), max_size=60)
trailing_text = st.text(st.characters(blacklist_characters="\r\n\0", codec="utf-8"), max_size=80)


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (r"a\:b", "a;b"),
        (r"hello\sworld", "hello world"),
        (r"back\\slash", "back\\slash"),
        (r"cr\rlf\n", "cr\rlf\n"),
        ("trailing\\", "trailing"),
        (r"unknown\qescape", "unknownqescape"),
        (r"\\s", "\\s"),
        ("", ""),
    ],
)
def test_unescape_follows_ircv3(raw, value):
    assert unescape_tag_value(raw) == value


def test_parse_tags_without_value_and_repeated_keys():
    assert parse_tags("a=1;flag;b=;a=2;;") == {"a": "2", "flag": "", "b": ""}


def test_parse_line_edge_cases():
    assert parse_line("PING :tmi.twitch.tv\r\n") == IrcMessage("PING", (), "tmi.twitch.tv")
    spaced = parse_line(":nick!u@h  PRIVMSG   #chan  :two  spaces :) kept")
    assert spaced.params == ("#chan",) and spaced.trailing == "two  spaces :) kept"
    assert parse_line("PRIVMSG #chan :").trailing == ""
    assert parse_line(b"privmsg #chan word").arguments == ("#chan", "word")
    assert parse_line("NOTICE #c :bad utf-8 \xff".encode("latin-1")).trailing == "bad utf-8 \ufffd"
    for bad in ["", "   ", "@a=b", "@a=b ", ":prefix.only", ":prefix :trailing only"]:
        with pytest.raises(IrcParseError):
            parse_line(bad)


def test_privmsg_without_text_or_with_malformed_tags_does_not_raise():
    assert isinstance(parse_event(":u!u@u PRIVMSG #chan"), IrcMessage)
    msg = parse_event("@emotes=25:4-1,x-2,:3-4/:0-1;bits=lots;tmi-sent-ts=soon :u!u@u PRIVMSG #chan :hi there")
    assert isinstance(msg, ChatMessage)
    assert (msg.emotes, msg.bits, msg.sent_at) == ((), 0, None)
    assert isinstance(parse_event("CLEARCHAT notachannel"), IrcMessage)


def test_format_line_escapes_tags_and_prefixes_trailing():
    line = format_line(
        "PRIVMSG", "#chan", trailing="hi there", tags={"a": "x; y\\z", "b": ""}, prefix="u!u@u.tmi.twitch.tv"
    )
    assert line == r"@a=x\:\sy\\z;b= :u!u@u.tmi.twitch.tv PRIVMSG #chan :hi there"
    assert format_line("JOIN", "#a,#b") == "JOIN #a,#b"
    assert format_line("PONG", trailing="") == "PONG :"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"params": ("#chan",), "trailing": "hello\r\nPRIVMSG #other :injected"},
        {"params": ("#chan x",), "trailing": None},
        {"params": (":sneaky",), "trailing": None},
        {"params": ("",), "trailing": None},
        {"params": ("#chan",), "trailing": "nul\0byte"},
    ],
)
def test_format_line_refuses_what_would_change_the_framing(kwargs):
    with pytest.raises(ValueError):
        format_line("PRIVMSG", *kwargs["params"], trailing=kwargs["trailing"])


def test_format_line_refuses_bad_command_and_tag_key():
    with pytest.raises(ValueError):
        format_line("PRIV MSG")
    with pytest.raises(ValueError):
        format_line("PRIVMSG", "#c", trailing="x", tags={"bad key": "v"})


@given(tag_values)
def test_escape_then_unescape_round_trips(value):
    assert unescape_tag_value(escape_tag_value(value)) == value
    assert not {" ", ";", "\r", "\n"} & set(escape_tag_value(value))


@given(st.dictionaries(tag_keys, tag_values, max_size=6), trailing_text)
def test_format_then_parse_round_trips_tags_and_text(tags, text):
    line = format_line("PRIVMSG", "#somechannel", trailing=text, tags=tags, prefix="u!u@u.tmi.twitch.tv")
    msg = parse_line(line + "\r\n")
    assert dict(msg.tags) == tags
    assert msg.trailing == text
    assert msg.params == ("#somechannel",)
    event = to_event(msg)
    assert isinstance(event, ChatMessage) and event.channel == "somechannel"


@given(st.text(max_size=300))
def test_arbitrary_input_never_raises_anything_but_parse_error(line):
    try:
        msg = parse_line(line)
    except IrcParseError:
        return
    to_event(msg)


commands = st.sampled_from(
    ["PRIVMSG", "USERNOTICE", "CLEARCHAT", "CLEARMSG", "ROOMSTATE", "NOTICE", "PING", "RECONNECT"]
)
twitchy_tags = st.dictionaries(
    st.sampled_from(
        [
            "id",
            "bits",
            "emotes",
            "badges",
            "badge-info",
            "tmi-sent-ts",
            "ban-duration",
            "slow",
            "followers-only",
            "emote-only",
            "msg-id",
            "login",
            "target-msg-id",
            "room-id",
        ]
    ),
    st.text(st.characters(blacklist_characters="\0", codec="utf-8"), max_size=20),
)


@given(twitchy_tags, commands, st.lists(st.from_regex(r"\A#?[a-z0-9_]{0,8}\Z"), max_size=2), st.none() | trailing_text)
def test_typed_conversion_never_raises_on_hostile_tag_values(tags, command, params, trailing):
    params = [p for p in params if p]
    msg = parse_line(format_line(command, *params, trailing=trailing, tags=tags))
    to_event(msg)
