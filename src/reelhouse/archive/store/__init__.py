"""The archive's SQL: every statement on its tables lives in this package (`VodStore`,
`ChannelStore`, `ChatStore`). The chat ingest writer (`chat/writer.py`) is the one exception:
its COPY/multi-row statements are the hot path of chat recording and stay next to the
batching they serve."""

from reelhouse.archive.store.channels import Channel, ChannelStore
from reelhouse.archive.store.vods import CursorError, PageCursor, VodCounts, VodNotFound, VodStore, new_vod_row

__all__ = [
    "Channel",
    "ChannelStore",
    "CursorError",
    "PageCursor",
    "VodCounts",
    "VodNotFound",
    "VodStore",
    "new_vod_row",
]
