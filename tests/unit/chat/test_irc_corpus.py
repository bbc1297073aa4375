"""Every line of the corpus parses into the typed event its Twitch format describes."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from reelhouse.archive.twitch.chat_events import (
    Badge,
    ChatMessage,
    ClearChat,
    ClearMsg,
    EmotePosition,
    Notice,
    Ping,
    Reconnect,
    RoomState,
    UserNotice,
    parse_event,
)
from reelhouse.archive.twitch.irc_message import IrcMessage, format_line, parse_line
from tests.fakes.twitch_irc import load_corpus

CORPUS = load_corpus()


def event(name: str):
    return parse_event(CORPUS[name])


def test_corpus_covers_every_event_kind():
    kinds = {type(parse_event(line)) for line in CORPUS.values()}
    assert kinds == {ChatMessage, UserNotice, ClearChat, ClearMsg, RoomState, Notice, Ping, Reconnect, IrcMessage}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_every_corpus_line_survives_format_and_reparse(name):
    msg = parse_line(CORPUS[name])
    head = re.match(r"(?:@\S+ )?(?::(\S+) )?(\S+)", CORPUS[name])
    assert msg.command == head.group(2).upper()
    rebuilt = format_line(msg.command, *msg.params, trailing=msg.trailing, tags=msg.tags, prefix=head.group(1))
    assert parse_line(rebuilt) == msg


def test_privmsg_fields_emotes_and_badges():
    msg = event("privmsg-basic")
    assert isinstance(msg, ChatMessage)
    assert (msg.channel, msg.login, msg.display_name, msg.user_id) == ("ronni", "ronni", "ronni", "1337")
    assert msg.message_id == "b34ccfc7-4977-403a-8a94-33c6bac34fb8"
    assert msg.text == "Kappa Keepo Kappa" and not msg.is_action
    assert msg.color == "#0D4200"
    assert msg.badges == (Badge("turbo", "1"),)
    assert msg.badge_info == ()
    assert msg.emotes == (EmotePosition("25", 0, 4), EmotePosition("1902", 6, 10), EmotePosition("25", 12, 16))
    assert [msg.text[e.start : e.end + 1] for e in msg.emotes] == ["Kappa", "Keepo", "Kappa"]
    assert msg.sent_at == datetime(2017, 10, 5, 23, 36, 12, 675000, tzinfo=UTC)
    assert msg.bits == 0 and msg.reply_parent_msg_id is None
    assert msg.tags["user-type"] == "global_mod"


def test_privmsg_subscriber_badges_keep_order_and_badge_info():
    msg = event("privmsg-subscriber-badges")
    assert msg.badges == (Badge("moderator", "1"), Badge("subscriber", "12"), Badge("partner", "1"))
    assert msg.badge_info == (Badge("subscriber", "14"),)
    assert msg.emotes == ()


def test_privmsg_bits_and_empty_color():
    msg = event("privmsg-bits")
    assert msg.bits == 100
    assert msg.color is None


def test_privmsg_reply_parent_tags_are_unescaped():
    msg = event("privmsg-reply")
    assert msg.reply_parent_msg_id == "b1f3a4c2-2222-4b33-8c44-0d55e66f7788"
    assert msg.reply_parent_user_login == "alpha"
    assert msg.reply_parent_msg_body == "did you see that; C:\\games\\clip?"
    assert msg.text == "@Alpha yes, that was wild"


def test_privmsg_action_is_detected_and_unwrapped():
    msg = event("privmsg-action")
    assert msg.is_action
    assert msg.text == "waves at chat"


def test_privmsg_unicode_emote_positions_count_code_points():
    msg = event("privmsg-unicode")
    assert msg.display_name == "日本の視聴者"
    assert msg.login == "nihon_viewer"
    assert msg.text == "héllo 日本語 🎉 Kappa"
    (emote,) = msg.emotes
    assert msg.text[emote.start : emote.end + 1] == "Kappa"


def test_escaped_tag_values_are_unescaped():
    msg = event("privmsg-escaped-tags")
    assert msg.tags["badge-info"] == "predictions/Team A; red\\blue"
    assert msg.badge_info == (Badge("predictions", "Team A; red\\blue"),)
    assert msg.text == "blue side wins; trust me :)"


def test_trailing_lone_backslash_in_tag_value_is_dropped():
    msg = event("privmsg-trailing-backslash")
    assert msg.reply_parent_msg_body == "ends with a backslash"
    assert msg.text == "@other \\o/"


def test_usernotice_sub_without_message():
    notice = event("usernotice-sub")
    assert isinstance(notice, UserNotice)
    assert (notice.kind, notice.login, notice.channel) == ("sub", "newsub", "dallas")
    assert notice.system_msg == "NewSub subscribed at Tier 1."
    assert notice.text is None
    assert notice.msg_params["sub-plan-name"] == "Channel Subscription (dallas)"
    assert notice.msg_params["cumulative-months"] == "1"


def test_usernotice_resub_carries_the_viewer_message():
    notice = event("usernotice-resub")
    assert notice.kind == "resub"
    assert notice.text == "Great stream -- keep it up!"
    assert notice.system_msg.startswith("ronni subscribed with Prime. They've subscribed for 6 months")
    assert notice.msg_params["streak-months"] == "2"
    assert notice.message_id == "db25007f-7a18-43eb-9379-80131e44d633"
    assert notice.sent_at == datetime(2017, 10, 5, 23, 36, 12, 675000, tzinfo=UTC)


def test_usernotice_subgift_and_raid_params():
    gift = event("usernotice-subgift")
    assert gift.kind == "subgift"
    assert gift.msg_params["recipient-user-name"] == "mr_woodchuck"
    assert gift.msg_params["sub-plan-name"] == "House of Nyoro~n"
    raid = event("usernotice-raid")
    assert raid.kind == "raid"
    assert raid.channel == "othertestchannel"
    assert raid.msg_params["viewerCount"] == "15"
    assert raid.system_msg == "15 raiders from TestChannel have joined!"


def test_clearchat_timeout_ban_and_full_clear():
    timeout, ban, full = event("clearchat-timeout"), event("clearchat-ban"), event("clearchat-full")
    assert (timeout.target_login, timeout.target_user_id, timeout.ban_duration) == ("ronni", "87654321", 350)
    assert timeout.is_timeout and not timeout.is_ban and not timeout.is_full_clear
    assert ban.is_ban and ban.ban_duration is None and ban.target_login == "ronni"
    assert full.is_full_clear and full.target_login is None and not full.is_ban
    assert full.sent_at == datetime.fromtimestamp(1642715695.392, UTC)


def test_clearmsg():
    cleared = event("clearmsg")
    assert isinstance(cleared, ClearMsg)
    assert cleared.target_msg_id == "94e6c7ff-bf98-4faa-af5d-7ad633a158a9"
    assert (cleared.login, cleared.text, cleared.channel) == ("foo", "what a great day", "bar")


def test_roomstate_full_and_partial_updates():
    full = event("roomstate-join")
    assert (full.emote_only, full.followers_only, full.slow, full.subs_only, full.r9k) == (False, -1, 0, False, False)
    assert full.room_id == "12345678"
    slow = event("roomstate-slow-update")
    # A partial update leaves the other settings unknown rather than claiming they are off.
    assert (slow.slow, slow.emote_only, slow.followers_only, slow.subs_only) == (10, None, None, None)
    mixed = event("roomstate-followers-emote-only")
    assert (mixed.emote_only, mixed.followers_only) == (True, 30)


def test_notices_ping_and_reconnect():
    notice = event("notice-emote-only-on")
    assert (notice.channel, notice.msg_id, notice.text) == (
        "bar",
        "emote_only_on",
        "This room is now in emote-only mode.",
    )
    failed = event("notice-login-failed")
    assert (failed.channel, failed.msg_id, failed.text) == (None, None, "Login authentication failed")
    assert event("ping") == Ping(origin="tmi.twitch.tv")
    assert event("reconnect") == Reconnect()


def test_state_numerics_and_unknown_commands_come_back_generic():
    state = event("globaluserstate")
    assert isinstance(state, IrcMessage) and state.command == "GLOBALUSERSTATE"
    assert state.tags["emote-sets"].startswith("0,33,50")
    welcome = event("numeric-001")
    assert (welcome.command, welcome.params, welcome.trailing) == ("001", ("justinfan123456",), "Welcome, GLHF!")
    names = event("numeric-353")
    assert names.params == ("justinfan123456", "=", "#dallas") and names.trailing == "justinfan123456"
    join = event("join-echo")
    assert (join.prefix.nick, join.prefix.user, join.prefix.host) == (
        "justinfan123456",
        "justinfan123456",
        "justinfan123456.tmi.twitch.tv",
    )
    assert join.channel == "dallas"
    whisper = event("whisper")
    assert whisper.command == "WHISPER" and whisper.trailing == "hello there"
