"""IRCv3 lines as Twitch sends them, parsed into typed chat events.

`parse_line` splits one line into an `IrcMessage` (tags, prefix, command, params, trailing);
`to_event` turns it into a Twitch event (`ChatMessage`, `UserNotice`, `ClearChat`, ...).
Neither step trusts the server: a field that does not parse becomes `None`/empty instead of
raising, and commands we do not model come back as the generic `IrcMessage`, so one odd line
can never stop a recorder. Only a line without a command raises `IrcParseError`.

`format_line` builds outgoing lines (the client's commands, the fake server's traffic) and
refuses CR/LF/NUL so that chat text can never smuggle in a second command.

Formats: https://ircv3.net/specs/extensions/message-tags and
https://dev.twitch.tv/docs/chat/irc/ (tags reference).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

__all__ = [
    "Badge", "ChannelEvent", "ChatMessage", "ClearChat", "ClearMsg", "EmotePosition", "IrcMessage", "IrcParseError",
    "Notice", "Ping", "Prefix", "Reconnect", "RoomState", "TwitchEvent", "UserNotice",
    "escape_tag_value", "format_line", "parse_event", "parse_line", "parse_tags", "tmi_sent_time",
    "to_event", "unescape_tag_value",
]

_UNESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}
_ESCAPES = str.maketrans({"\\": "\\\\", ";": "\\:", " ": "\\s", "\r": "\\r", "\n": "\\n"})
# IRCv3 tag keys: optional client prefix '+', optional vendor ('twitch.tv/'), then the name.
_TAG_KEY = re.compile(r"\+?(?:[A-Za-z0-9.-]+/)?[A-Za-z0-9-]+")
_COMMAND = re.compile(r"[A-Za-z]+|[0-9]{3}")
_FORBIDDEN_IN_LINE = ("\r", "\n", "\0")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class IrcParseError(ValueError):
    """The line has no command, so it is not IRC at all."""


def unescape_tag_value(raw: str) -> str:
    """Undo IRCv3 tag escaping; a lone trailing backslash is dropped, `\\x` becomes `x`."""
    if "\\" not in raw:
        return raw  # nearly all values: skip the character loop
    out: list[str] = []
    index, length = 0, len(raw)
    while index < length:
        char = raw[index]
        if char != "\\":
            out.append(char)
            index += 1
            continue
        if index + 1 == length:
            break
        escaped = raw[index + 1]
        out.append(_UNESCAPES.get(escaped, escaped))
        index += 2
    return "".join(out)


def escape_tag_value(value: str) -> str:
    return value.translate(_ESCAPES)


def parse_tags(raw: str) -> dict[str, str]:
    """`a=1;b=x\\sy;c` -> {'a': '1', 'b': 'x y', 'c': ''}; a repeated key keeps its last value."""
    tags: dict[str, str] = {}
    for item in raw.split(";"):
        if not item:
            continue
        key, _, value = item.partition("=")
        if key:
            tags[key] = unescape_tag_value(value)
    return tags


@dataclass(frozen=True, slots=True)
class Prefix:
    """Message source: `nick!user@host` for users, a bare host (`tmi.twitch.tv`) for the server."""

    nick: str | None = None
    user: str | None = None
    host: str | None = None

    @classmethod
    def parse(cls, raw: str) -> Prefix:
        if "!" not in raw and "@" not in raw:
            # Twitch's server names contain dots, nicknames never do.
            return cls(host=raw) if "." in raw else cls(nick=raw)
        nick_user, _, host = raw.partition("@")
        nick, _, user = nick_user.partition("!")
        return cls(nick=nick or None, user=user or None, host=host or None)


@dataclass(frozen=True, slots=True)
class IrcMessage:
    """One parsed line. `params` are the middle parameters; `trailing` is the `:`-introduced
    last parameter (None when the line had none)."""

    command: str
    params: tuple[str, ...] = ()
    trailing: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    prefix: Prefix | None = None

    @property
    def arguments(self) -> tuple[str, ...]:
        """All parameters in order, trailing included, as RFC 1459 counts them."""
        return self.params if self.trailing is None else (*self.params, self.trailing)

    @property
    def channel(self) -> str | None:
        """Channel login without '#', when the first parameter is a channel."""
        first = self.arguments[0] if self.arguments else ""
        return first[1:].lower() if first.startswith("#") and len(first) > 1 else None


def parse_line(line: str | bytes) -> IrcMessage:
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    line = line.rstrip("\r\n")
    tags: dict[str, str] = {}
    position = 0
    if line.startswith("@"):
        end = line.find(" ")
        if end < 0:
            raise IrcParseError("tags without a command")
        tags = parse_tags(line[1:end])
        position = end + 1
    rest = line[position:].lstrip(" ")
    prefix = None
    if rest.startswith(":"):
        source, _, rest = rest[1:].partition(" ")
        prefix = Prefix.parse(source)
        rest = rest.lstrip(" ")
    if rest.startswith(":"):
        raise IrcParseError("parameters without a command")
    head, separator, trailing = rest.partition(" :")
    words = head.split()
    if not words:
        raise IrcParseError("line has no command")
    return IrcMessage(
        command=words[0].upper(),
        params=tuple(words[1:]),
        trailing=trailing if separator else None,
        tags=tags,
        prefix=prefix,
    )


def format_line(
    command: str,
    *params: str,
    trailing: str | None = None,
    tags: Mapping[str, str] | None = None,
    prefix: str | None = None,
) -> str:
    """Build one line (without CRLF). Raises ValueError for anything that would change how the
    receiver splits the line: CR/LF/NUL anywhere, spaces or a leading ':' in a middle param."""
    if not _COMMAND.fullmatch(command):
        raise ValueError(f"invalid IRC command {command!r}")
    parts: list[str] = []
    if tags:
        rendered = []
        for key, value in tags.items():
            if not _TAG_KEY.fullmatch(key):
                raise ValueError(f"invalid tag key {key!r}")
            rendered.append(f"{key}={escape_tag_value(value)}")
        parts.append("@" + ";".join(rendered))
    if prefix is not None:
        if not prefix or " " in prefix or any(c in prefix for c in _FORBIDDEN_IN_LINE):
            raise ValueError(f"invalid prefix {prefix!r}")
        parts.append(":" + prefix)
    parts.append(command)
    for param in params:
        if not param or " " in param or param.startswith(":") or any(c in param for c in _FORBIDDEN_IN_LINE):
            raise ValueError(f"invalid middle parameter {param!r}; pass it as trailing")
        parts.append(param)
    if trailing is not None:
        if any(c in trailing for c in _FORBIDDEN_IN_LINE):
            raise ValueError("trailing parameter contains CR, LF or NUL")
        parts.append(":" + trailing)
    return " ".join(parts)


# --- Twitch events -------------------------------------------------------------------------


class Badge(NamedTuple):
    name: str
    version: str


class EmotePosition(NamedTuple):
    """Emote `emote_id` occupies text[start:end + 1]; indices count Unicode code points, which
    is what Python's str indexing counts too."""

    emote_id: str
    start: int
    end: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelEvent:
    """Fields every channel event has: `channel` is the login without '#', `tags` the raw
    (unescaped) IRCv3 tags, kept so storage can keep what the typed fields do not cover."""

    channel: str
    tags: Mapping[str, str]


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatMessage(ChannelEvent):
    """PRIVMSG: a viewer's chat line. `text` has the /me ACTION wrapper removed."""

    text: str
    login: str
    message_id: str | None
    user_id: str | None
    display_name: str | None
    color: str | None
    is_action: bool
    badges: tuple[Badge, ...]
    badge_info: tuple[Badge, ...]
    emotes: tuple[EmotePosition, ...]
    bits: int
    reply_parent_msg_id: str | None
    reply_parent_user_login: str | None
    reply_parent_msg_body: str | None
    sent_at: datetime | None
    room_id: str | None


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
    millis = _int_or_none(tags.get("tmi-sent-ts"))
    # timedelta keeps milliseconds exact, where a float timestamp would round them.
    return None if millis is None else _EPOCH + timedelta(milliseconds=millis)


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
    body = text[len("\x01ACTION"):]
    if body.endswith("\x01"):
        body = body[:-1]
    return body.removeprefix(" "), True


def _chat_message(msg: IrcMessage, channel: str) -> ChatMessage | IrcMessage:
    if len(msg.arguments) < 2:
        return msg
    tags = msg.tags
    text, is_action = _split_action(msg.arguments[-1])
    login = (msg.prefix.nick if msg.prefix and msg.prefix.nick else tags.get("login", "")).lower()
    return ChatMessage(
        channel=channel,
        text=text,
        login=login,
        message_id=_empty_as_none(tags.get("id")),
        user_id=_empty_as_none(tags.get("user-id")),
        display_name=_empty_as_none(tags.get("display-name")),
        color=_empty_as_none(tags.get("color")),
        is_action=is_action,
        badges=parse_badges(tags.get("badges")),
        badge_info=parse_badges(tags.get("badge-info")),
        emotes=parse_emotes(tags.get("emotes")),
        bits=_int_or_none(tags.get("bits")) or 0,
        reply_parent_msg_id=_empty_as_none(tags.get("reply-parent-msg-id")),
        reply_parent_user_login=_empty_as_none(tags.get("reply-parent-user-login")),
        reply_parent_msg_body=tags.get("reply-parent-msg-body"),
        sent_at=tmi_sent_time(tags),
        room_id=_empty_as_none(tags.get("room-id")),
        tags=tags,
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
    return to_event(parse_line(line))
