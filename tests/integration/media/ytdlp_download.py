"""A process that downloads one URL with core's yt-dlp runner, for tests that SIGKILL it.

Usage: python ytdlp_download.py URL OUTPUT DOWNLOADER
Prints "started" once the first progress arrives.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import cast

from reelhouse.core.media.ytdlp import Downloader, YtdlpProgress, YtdlpRequest, run_ytdlp


async def main(url: str, output: str, downloader: str) -> None:
    started = False

    def progress(report: YtdlpProgress) -> None:
        nonlocal started
        if not started and report.downloaded_bytes > 0:
            started = True
            print("started", flush=True)

    request = YtdlpRequest(
        url=url, output=Path(output), concurrent_fragments=2, downloader=cast(Downloader, downloader)
    )
    await run_ytdlp(request, progress)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
