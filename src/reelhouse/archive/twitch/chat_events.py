# Over 400 lines: one small typed event per Twitch IRC command, in one mapping.
"""Twitch chat events typed from IRC messages: `to_event` turns an `IrcMessage` into a
`ChatMessage`, `UserNotice`, `ClearChat`, `ClearMsg`, `RoomState`, `Notice`, `Ping` or
`Reconnect`; commands we do not model come back as the `IrcMessage` itself. A field that does
not parse becomes `None`/empty instead of raising, so one odd line never stops a recorder.

Tags reference: https://dev.twitch.tv/docs/chat/irc/
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from reelhouse.archive.twitch.irc_message import IrcMessage, parse_line, parse_tags

__all__ = [
    "Badge",
    "ChannelEvent",
    "ChatMessage",
    "ClearChat",
    "ClearMsg",
    "EmotePosition",
    "Notice",
    "Ping",
    "Reconnect",
    "RoomState",
    "TwitchEvent",
    "UserNotice",
    "chat_message_from_line",
    "parse_badges",
    "parse_emotes",
    "parse_event",
    "tmi_sent_time",
    "to_event",
]


class Badge(NamedTuple):
    name: str
    version: str


class EmotePosition(NamedTuple):
    """Emote `emote_id` occupies text[start:end + 1]; indices count Unicode code points, which
    is what Python's str indexing counts too."""

    emote_id: str
    start: int
    end: int


def _tag_view(key: str) -> property:
    """A read-only attribute that is the tag's value, or None when absent or empty."""
    return property(lambda self: self.tags.get(key) or None, doc=f"the `{key}` tag")


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelEvent:
    """Fields every channel event has: `channel` is the login without '#', `tags` the raw
    (unescaped) IRCv3 tags, kept so storage can keep what the typed fields do not cover."""

    channel: str
    tags: Mapping[str, str]


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatMessage(ChannelEvent):
    """PRIVMSG: a viewer's chat line. `text` has the /me ACTION wrapper removed.

    Only what needs the line itself is stored; the rest are views of `tags`, computed when
    asked for. A recorder at tens of thousands of messages a second asks for a few of them and
    never for the parsed badges or emote positions, so nothing is spent building those."""

    text: str
    login: str
    is_action: bool
    sent_at: datetime | None

    message_id = _tag_view("id")
    user_id = _tag_view("user-id")
    display_name = _tag_view("display-name")
    color = _tag_view("color")
    room_id = _tag_view("room-id")
    reply_parent_msg_id = _tag_view("reply-parent-msg-id")
    reply_parent_user_login = _tag_view("reply-parent-user-login")

    @property
    def reply_parent_msg_body(self) -> str | None:
        return self.tags.get("reply-parent-msg-body")  # kept as sent, even when empty

    @property
    def bits(self) -> int:
        return _int_or_none(self.tags.get("bits")) or 0

    @property
    def badges(self) -> tuple[Badge, ...]:
        return parse_badges(self.tags.get("badges"))

    @property
    def badge_info(self) -> tuple[Badge, ...]:
        return parse_badges(self.tags.get("badge-info"))

    @property
    def emotes(self) -> tuple[EmotePosition, ...]:
        return parse_emotes(self.tags.get("emotes"))


@dataclass(frozen=True, slots=True, kw_only=True)
class UserNotice(ChannelEvent):
    """USERNOTICE: sub, resub, subgift, raid, announcement...; `kind` is the `msg-id` tag and
    `msg_params` holds the `msg-param-*` tags with that prefix removed."""

    kind: str
    system_msg: str | None
    login: str | None
    display_name: str | None
    user_id: str | None
    message_id: str | None
    text: str | None
    sent_at: datetime | None
    msg_params: Mapping[str, str]
    badges: tuple[Badge, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ClearChat(ChannelEvent):
    """CLEARCHAT: no target means the whole chat was cleared; a target without a duration was
    banned; with `ban_duration` (seconds) it was timed out."""

    target_login: str | None
    target_user_id: str | None
    ban_duration: int | None
    sent_at: datetime | None

    @property
    def is_full_clear(self) -> bool:
        return self.target_login is None

    @property
    def is_ban(self) -> bool:
        return self.target_login is not None and self.ban_duration is None

    @property
    def is_timeout(self) -> bool:
        return self.target_login is not None and self.ban_duration is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClearMsg(ChannelEvent):
    """CLEARMSG: a moderator deleted one message (`target_msg_id`)."""

    target_msg_id: str | None
    login: str | None
    text: str | None
    sent_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomState(ChannelEvent):
    """ROOMSTATE: after a JOIN every field is present; later updates carry only the setting that
    changed, so `None` means "unchanged", not "off". `followers_only` is -1 (off) or minutes;
    `slow` is seconds between messages."""

    room_id: str | None
    emote_only: bool | None
    followers_only: int | None
    slow: int | None
    subs_only: bool | None
    r9k: bool | None


@dataclass(frozen=True, slots=True)
class Ping:
    origin: str | None


@dataclass(frozen=True, slots=True)
class Reconnect:
    """The server is about to close this connection for maintenance."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Notice:
    """NOTICE: `channel` is None for connection-level notices (e.g. a failed login)."""

    channel: str | None
    msg_id: str | None
    text: str
    tags: Mapping[str, str]


TwitchEvent = ChatMessage | UserNotice | ClearChat | ClearMsg | RoomState | Ping | Reconnect | Notice | IrcMessage


def _int_or_none(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _flag(value: str | None) -> bool | None:
    number = _int_or_none(value)
    return None if number is None else number != 0


def tmi_sent_time(tags: Mapping[str, str]) -> datetime | None:
    """Server time of the `tmi-sent-ts` tag (milliseconds since the epoch), as aware UTC."""
    raw = tags.get("tmi-sent-ts")
    if not raw:
        return None
    try:
        # Exact for milliseconds: a double near 2e9 s is off by < 0.25 us and fromtimestamp
        # rounds to the microsecond (tested against timedelta arithmetic).
        return datetime.fromtimestamp(int(raw) / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        return None


def _empty_as_none(value: str | None) -> str | None:
    return value or None


def parse_badges(raw: str | None) -> tuple[Badge, ...]:
    """`broadcaster/1,subscriber/12` -> (Badge('broadcaster','1'), Badge('subscriber','12'))."""
    if not raw:
        return ()
    badges = []
    for item in raw.split(","):
        name, _, version = item.partition("/")
        if name:
            badges.append(Badge(name, version))
    return tuple(badges)


def parse_emotes(raw: str | None) -> tuple[EmotePosition, ...]:
    """`25:0-4,12-16/1902:6-10` -> positions sorted by start; malformed ranges are skipped."""
    if not raw:
        return ()
    positions = []
    for group in raw.split("/"):
        emote_id, _, ranges = group.partition(":")
        for span in ranges.split(","):
            start, _, end = span.partition("-")
            first, last = _int_or_none(start), _int_or_none(end)
            if emote_id and first is not None and last is not None and 0 <= first <= last:
                positions.append(EmotePosition(emote_id, first, last))
    return tuple(sorted(positions, key=lambda position: position.start))


def _split_action(text: str) -> tuple[str, bool]:
    # CTCP ACTION (/me): "\x01ACTION waves\x01"; some clients omit the closing \x01.
    if not text.startswith("\x01ACTION"):
        return text, False
    body = text[len("\x01ACTION") :]
    if body.endswith("\x01"):
        body = body[:-1]
    return body.removeprefix(" "), True


def _chat_message(msg: IrcMessage, channel: str) -> ChatMessage | IrcMessage:
    params = msg.params
    if msg.trailing is None or not params:
        return msg if len(msg.arguments) < 2 else _chat_message_slow(msg, channel)
    tags = msg.tags
    text = msg.trailing
    is_action = text.startswith("\x01ACTION")
    if is_action:
        text, is_action = _split_action(text)
    prefix = msg.prefix
    login = (prefix.nick if prefix is not None and prefix.nick else tags.get("login", "")).lower()
    return ChatMessage(
        channel=channel, text=text, login=login, is_action=is_action, sent_at=tmi_sent_time(tags), tags=tags
    )


def _chat_message_slow(msg: IrcMessage, channel: str) -> ChatMessage:
    # PRIVMSG #chan text (no ':' before a one-word text): the text is the last middle param.
    text, is_action = _split_action(msg.arguments[-1])
    login = (msg.prefix.nick if msg.prefix and msg.prefix.nick else msg.tags.get("login", "")).lower()
    return ChatMessage(
        channel=channel, text=text, login=login, is_action=is_action, sent_at=tmi_sent_time(msg.tags), tags=msg.tags
    )


def _user_notice(msg: IrcMessage, channel: str) -> UserNotice:
    tags = msg.tags
    return UserNotice(
        channel=channel,
        kind=tags.get("msg-id", ""),
        system_msg=tags.get("system-msg"),
        login=_empty_as_none(tags.get("login")),
        display_name=_empty_as_none(tags.get("display-name")),
        user_id=_empty_as_none(tags.get("user-id")),
        message_id=_empty_as_none(tags.get("id")),
        text=msg.arguments[1] if len(msg.arguments) > 1 else None,
        sent_at=tmi_sent_time(tags),
        msg_params={k.removeprefix("msg-param-"): v for k, v in tags.items() if k.startswith("msg-param-")},
        badges=parse_badges(tags.get("badges")),
        tags=tags,
    )


def _clear_chat(msg: IrcMessage, channel: str) -> ClearChat:
    target = msg.arguments[1].lower() if len(msg.arguments) > 1 and msg.arguments[1] else None
    return ClearChat(
        channel=channel,
        target_login=target,
        target_user_id=_empty_as_none(msg.tags.get("target-user-id")) if target else None,
        ban_duration=_int_or_none(msg.tags.get("ban-duration")) if target else None,
        sent_at=tmi_sent_time(msg.tags),
        tags=msg.tags,
    )


def _clear_msg(msg: IrcMessage, channel: str) -> ClearMsg:
    return ClearMsg(
        channel=channel,
        target_msg_id=_empty_as_none(msg.tags.get("target-msg-id")),
        login=_empty_as_none(msg.tags.get("login")),
        text=msg.arguments[1] if len(msg.arguments) > 1 else None,
        sent_at=tmi_sent_time(msg.tags),
        tags=msg.tags,
    )


def _room_state(msg: IrcMessage, channel: str) -> RoomState:
    tags = msg.tags
    return RoomState(
        channel=channel,
        room_id=_empty_as_none(tags.get("room-id")),
        emote_only=_flag(tags.get("emote-only")),
        followers_only=_int_or_none(tags.get("followers-only")),
        slow=_int_or_none(tags.get("slow")),
        subs_only=_flag(tags.get("subs-only")),
        r9k=_flag(tags.get("r9k")),
        tags=tags,
    )


_CHANNEL_EVENTS = {
    "PRIVMSG": _chat_message,
    "USERNOTICE": _user_notice,
    "CLEARCHAT": _clear_chat,
    "CLEARMSG": _clear_msg,
    "ROOMSTATE": _room_state,
}


def to_event(msg: IrcMessage) -> TwitchEvent:
    """Typed event for the commands Twitch chat uses; the message itself for anything else."""
    if msg.command == "PING":
        return Ping(origin=msg.arguments[-1] if msg.arguments else None)
    if msg.command == "RECONNECT":
        return Reconnect()
    if msg.command == "NOTICE":
        return Notice(
            channel=msg.channel,
            msg_id=_empty_as_none(msg.tags.get("msg-id")),
            text=msg.arguments[-1] if len(msg.arguments) > 1 else "",
            tags=msg.tags,
        )
    build = _CHANNEL_EVENTS.get(msg.command)
    channel = msg.channel
    if build is None or channel is None:
        return msg
    return build(msg, channel)


def parse_event(line: str | bytes) -> TwitchEvent:
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    return chat_message_from_line(line) or to_event(parse_line(line))


def chat_message_from_line(line: str) -> ChatMessage | None:
    """The ChatMessage of a line shaped like nearly every line of busy chat,
    `@tags :nick!user@host PRIVMSG #channel :text`, without the generic IrcMessage in between;
    None for any other line (which then goes the general way). Equal to
    `to_event(parse_line(line))` wherever it answers; a test holds it to that."""
    if line[:1] != "@":
        return None
    tags_end = line.find(" ")
    parts = line[tags_end + 1 :].rstrip("\r\n").split(" ", 3)
    if tags_end < 0 or len(parts) != 4:
        return None
    source, command, target, trailing = parts
    if command != "PRIVMSG" or source[:1] != ":" or target[:1] != "#" or len(target) < 2 or trailing[:1] != ":":
        return None
    nick = source[1:].partition("@")[0].partition("!")[0]
    if not nick or ("!" not in source and "@" not in source):
        return None  # a server prefix, or none usable: the general way decides
    tags = parse_tags(line[1:tags_end])
    text = trailing[1:]
    is_action = text.startswith("\x01ACTION")
    if is_action:
        text, is_action = _split_action(text)
    return ChatMessage(
        channel=target[1:].lower(),
        text=text,
        login=nick.lower(),
        is_action=is_action,
        sent_at=tmi_sent_time(tags),
        tags=tags,
    )
