"""IRCv3 lines as Twitch sends them: `parse_line` splits one line into an `IrcMessage` (tags,
prefix, command, params, trailing); `format_line` builds outgoing lines (the client's commands,
the fake server's traffic) and refuses CR/LF/NUL so that chat text can never smuggle in a second
command. Typed Twitch events are built from IrcMessage in `chat_events`.

Nothing here trusts the server: only a line without a command raises `IrcParseError`.

Format: https://ircv3.net/specs/extensions/message-tags
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "IrcMessage",
    "IrcParseError",
    "Prefix",
    "escape_tag_value",
    "format_line",
    "parse_line",
    "parse_tags",
    "unescape_tag_value",
]

_UNESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}
_ESCAPES = str.maketrans({"\\": "\\\\", ";": "\\:", " ": "\\s", "\r": "\\r", "\n": "\\n"})
# IRCv3 tag keys: optional client prefix '+', optional vendor ('twitch.tv/'), then the name.
_TAG_KEY = re.compile(r"\+?(?:[A-Za-z0-9.-]+/)?[A-Za-z0-9-]+")
_COMMAND = re.compile(r"[A-Za-z]+|[0-9]{3}")
_FORBIDDEN_IN_LINE = ("\r", "\n", "\0")


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
    if "\\" not in raw:
        # Nearly every Twitch line: no escapes, and exactly one '=' per tag. Checked by counting,
        # so the whole tag section is split in C and zipped; this is the hottest code in chat
        # ingest (a PRIVMSG carries ~16 tags). Anything else takes the general loop below.
        parts = raw.replace(";", "=").split("=")
        if len(parts) == 2 * raw.count(";") + 2 and raw[:1] != "=" and ";=" not in raw:  # no empty key
            pairs = iter(parts)
            return dict(zip(pairs, pairs, strict=True))
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
        first = self.params[0] if self.params else (self.trailing or "")
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
