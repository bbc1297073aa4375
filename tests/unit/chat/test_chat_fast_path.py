"""The PRIVMSG fast path (`chat_message_from_line`) answers exactly what the general parser
answers, or steps aside: over the whole corpus, the lines of a fake-server burst, and lines made
to sit on its edges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from reelhouse.archive.twitch.chat_events import ChatMessage, chat_message_from_line, tmi_sent_time, to_event
from reelhouse.archive.twitch.irc_message import IrcParseError, parse_line, parse_tags
from tests.fakes.twitch_irc import load_corpus
from tests.integration.chat_store.irc_process import render_burst

EDGES = [
    "@id=a;tmi-sent-ts=1 :Nick!nick@nick.tmi.twitch.tv PRIVMSG #Chan :hi there : with colons\r\n",
    "@id=a :nick!nick@host PRIVMSG #chan :",  # empty text
    "@id=a :nick!nick@host PRIVMSG #chan :\x01ACTION waves\x01",
    "@id=a :nick!nick@host PRIVMSG #chan :\x01ACTION no closing",
    "@id=a :nick!nick@host PRIVMSG #chan word",  # text as a middle parameter
    "@id=a :nick!nick@host PRIVMSG #chan extra :text",
    "@id=a :nick!nick@host privmsg #chan :lower-case command",
    "@id=a  :nick!nick@host PRIVMSG #chan :two spaces",
    "@id=a :tmi.twitch.tv PRIVMSG #chan :server prefix",
    "@login=viewer :!x@host PRIVMSG #chan :empty nick",
    "@id=a :nick@host PRIVMSG #chan :no user part",
    "@id=a :a@b!c PRIVMSG #chan :at before bang",
    "@id=a :nick!nick@host PRIVMSG # :no channel name",
    "@id=a :nick!nick@host PRIVMSG chan :no hash",
    "@id=a=b;x :nick!nick@host PRIVMSG #chan :tag value with '=' and a bare key",
    "@id=a\\sb;;=c :nick!nick@host PRIVMSG #chan :escaped, empty item, empty key",
    "@id=a;tmi-sent-ts=notanumber :nick!nick@host PRIVMSG #chan :bad timestamp",
    "@id=a;tmi-sent-ts=99999999999999999999 :nick!nick@host PRIVMSG #chan :timestamp out of range",
    ":nick!nick@host PRIVMSG #chan :no tags",
    "@id=a :nick!nick@host NOTICE #chan :not a privmsg",
    "@tags-only",
]


def general(line: str):
    try:
        return to_event(parse_line(line))
    except IrcParseError:
        return None


@pytest.mark.parametrize("line", [*load_corpus().values(), *EDGES, *(item[3] for item in render_burst(20, ["a", "b"]))])
def test_fast_path_equals_the_general_parser_or_steps_aside(line):
    fast = chat_message_from_line(line)
    if fast is not None:
        assert fast == general(line)
        assert isinstance(fast, ChatMessage)


def test_fast_path_takes_the_common_line():
    burst = [item[3] for item in render_burst(50, ["a"])]
    assert all(isinstance(chat_message_from_line(line), ChatMessage) for line in burst)
    assert chat_message_from_line(EDGES[0]).channel == "chan"
    assert chat_message_from_line(EDGES[0]).text == "hi there : with colons"


def test_tag_fast_path_matches_the_general_loop():
    # parse_tags splits escape-free sections in one go; the general loop is the reference.
    for raw in ("a=1;b=;c=x", "a=1;a=2", "a", "a=1;;b=2", "=x;a=1", "a=b=c", "a=x\\sy;b=\\:", ""):
        reference = {}
        for item in raw.split(";"):
            key, _, value = item.partition("=")
            if key:
                reference[key] = value.replace("\\s", " ").replace("\\:", ";")
        assert parse_tags(raw) == reference, raw


def test_tmi_sent_time_is_exact_to_the_millisecond():
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for millis in (0, 1, 999, 1714586400123, 1714586400999, 4102444799999, *range(1714586400000, 1714586402000, 7)):
        assert tmi_sent_time({"tmi-sent-ts": str(millis)}) == epoch + timedelta(milliseconds=millis)
    assert tmi_sent_time({"tmi-sent-ts": "x"}) is None and tmi_sent_time({}) is None
