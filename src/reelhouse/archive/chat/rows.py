"""Chat events -> `chat_messages` rows (tuples in `writer.COLUMNS` order).

What vod-tender lost and we keep (reference §12.2): Twitch's message id (the dedupe key), the
user id and login next to the display name, badges and emotes in IRC's own `set/version` and
`id:start-end` forms (what a player needs to render them), reply fields, bits, and
USERNOTICE / CLEARCHAT / CLEARMSG as events of their own `kind`, so a moderator's deletion is
replayable and nothing is erased. Tags without a column of their own go to the `tags` JSON.
The timestamp is the server's `tmi-sent-ts`, not the time we happened to read the line.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from reelhouse.archive.chat.writer import tags_json
from reelhouse.archive.twitch.chat_events import ChatMessage, ClearChat, ClearMsg, UserNotice

KIND_MESSAGE, KIND_ACTION = "message", "action"  # action: a `/me` line (CTCP ACTION), text unwrapped
KIND_NOTICE, KIND_CLEARCHAT, KIND_CLEARMSG = "notice", "clearchat", "clearmsg"
KINDS = (KIND_MESSAGE, KIND_ACTION, KIND_NOTICE, KIND_CLEARCHAT, KIND_CLEARMSG)
CHAT_LINE_KINDS = (KIND_MESSAGE, KIND_ACTION)  # what vod-tender's /chat returned: people's lines
RecordableEvent = ChatMessage | UserNotice | ClearChat | ClearMsg

# Tags that have a column, are the same for every row of a channel (room-id), or mean nothing
# once the message is sent (client-nonce: the sender's random dedupe token) stay out of `tags`.
_NOT_IN_TAGS = frozenset(
    {
        "id",
        "user-id",
        "display-name",
        "color",
        "badges",
        "emotes",
        "bits",
        "tmi-sent-ts",
        "login",
        "reply-parent-msg-id",
        "reply-parent-user-login",
        "reply-parent-msg-body",
        "room-id",
        "client-nonce",
    }
)
# Per distinct tag-key sequence (a handful per channel): the keys that go to `tags` and a C-level
# getter for their values. Per distinct (keys, values): the JSON. Most messages carry the same
# few flags (mod=0, subscriber=1...), so building `tags` is two dict lookups, not a loop over
# ~16 tags plus a JSON encoding. Both caches are bounded so rare shapes cannot pile up.
_TAG_PLANS: dict[tuple[str, ...], tuple[tuple[str, ...], Callable[[Mapping[str, str]], tuple[str, ...]] | None]] = {}
_TAGS_JSON: dict[tuple[tuple[str, ...], tuple[str, ...]], str | None] = {}
_CACHE_MAX = 4096
_UNCACHED: Any = object()  # None is a cached answer (no extra tags)


def _clip(value: str | None, length: int) -> str | None:
    # Column widths are enforced by PostgreSQL; one oversized value must not sink a batch.
    return value if value is None or len(value) <= length else value[:length]


def _text(value: str | None) -> str | None:
    # PostgreSQL text cannot hold NUL; chat text is user input and may contain one.
    return value.replace("\x00", "") if value and "\x00" in value else value


def _values_of(names: tuple[str, ...]) -> Callable[[Mapping[str, str]], tuple[str, ...]]:
    """A C-level getter of `names`' values as a tuple (itemgetter of one key returns it bare)."""
    if len(names) == 1:
        key = names[0]
        return lambda tags: (tags[key],)
    return itemgetter(*names)


def _extra_tags(tags: Mapping[str, str]) -> str | None:
    keys = tuple(tags)
    plan = _TAG_PLANS.get(keys)
    if plan is None:
        names = tuple(k for k in keys if k not in _NOT_IN_TAGS)
        plan = (names, _values_of(names) if names else None)
        if len(_TAG_PLANS) >= _CACHE_MAX:
            _TAG_PLANS.clear()
        _TAG_PLANS[keys] = plan
    names, getter = plan
    if getter is None:
        return None
    values = getter(tags)
    cache_key = (names, values)
    encoded = _TAGS_JSON.get(cache_key, _UNCACHED)
    if encoded is not _UNCACHED:
        return encoded
    present = {k: v for k, v in zip(names, values, strict=True) if v}
    encoded = tags_json(present).replace("\\u0000", "") if present else None
    if len(_TAGS_JSON) >= _CACHE_MAX:
        _TAGS_JSON.clear()
    _TAGS_JSON[cache_key] = encoded
    return encoded


def synthetic_id(*parts: object) -> str:
    """A stable id for events Twitch sends without one (CLEARCHAT, CLEARMSG, tagless lines), so
    the same event read twice across a reconnect is still stored once."""
    digest = hashlib.sha1("\x1f".join(str(p) for p in parts).encode()).hexdigest()
    return "h:" + digest


def event_time(event: RecordableEvent, received_at: datetime | None = None) -> datetime:
    return event.sent_at or received_at or datetime.now(UTC)


def build_row(
    event: RecordableEvent, vod_id: str, vod_start: float, received_at: datetime | None = None
) -> tuple[Any, ...]:
    """The row for `event` recorded under `vod_id`; `vod_start` is the VOD start as a unix time."""
    ts = event_time(event, received_at)
    rel = ts.timestamp() - vod_start
    tags = event.tags
    channel = event.channel
    if type(event) is ChatMessage:
        # The hot path (busy chat is nearly all PRIVMSG): tags read directly, not through the
        # event's properties.
        get = tags.get
        message_id = get("id") or synthetic_id(channel, event.login, get("tmi-sent-ts"), event.text)
        return (
            channel,
            vod_id,
            _clip(message_id, 64),
            KIND_ACTION if event.is_action else KIND_MESSAGE,
            ts,
            rel,
            _clip(get("user-id") or None, 32),
            _clip(event.login, 64),
            _clip(get("display-name") or None, 64),
            _text(event.text),
            get("badges") or None,
            get("emotes") or None,
            _clip(get("color") or None, 16),
            event.bits or None,
            _clip(get("reply-parent-msg-id") or None, 64),
            _clip(get("reply-parent-user-login") or None, 64),
            _text(get("reply-parent-msg-body")),
            _extra_tags(tags),
        )
    if isinstance(event, UserNotice):
        message_id = event.message_id or synthetic_id(
            channel, "notice", tags.get("tmi-sent-ts"), event.kind, event.login
        )
        return (
            channel,
            vod_id,
            _clip(message_id, 64),
            KIND_NOTICE,
            ts,
            rel,
            _clip(event.user_id, 32),
            _clip(event.login, 64),
            _clip(event.display_name, 64),
            _text(event.text),
            tags.get("badges") or None,
            tags.get("emotes") or None,
            _clip(tags.get("color") or None, 16),
            None,
            None,
            None,
            None,
            _extra_tags(tags),
        )
    if isinstance(event, ClearChat):
        message_id = synthetic_id(channel, "clearchat", tags.get("tmi-sent-ts"), event.target_login, event.ban_duration)
        return (
            channel,
            vod_id,
            message_id,
            KIND_CLEARCHAT,
            ts,
            rel,
            _clip(event.target_user_id, 32),
            _clip(event.target_login, 64),
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            _extra_tags(tags),
        )
    assert isinstance(event, ClearMsg)  # every other kind returned above
    message_id = synthetic_id(channel, "clearmsg", event.target_msg_id, tags.get("tmi-sent-ts"))
    return (
        channel,
        vod_id,
        message_id,
        KIND_CLEARMSG,
        ts,
        rel,
        None,
        _clip(event.login, 64),
        None,
        _text(event.text),
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        _extra_tags(tags),
    )
