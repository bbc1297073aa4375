"""What aria2c gets from an HLS download, and the fragment files it leaves: stdlib only.

Loaded by run_yt_dlp.py inside the yt-dlp process (by path: it imports nothing of reelhouse).
- `aria2c_uri`: every URL percent-encoded down to printable non-space ASCII, http(s) only, so a
  manifest cannot add a line, and with it an aria2c option or a second URI, to aria2c's input
  (yt-dlp's own aria2c HLS support was removed for exactly that: GHSA-vx4q-3cr2-7cg2);
- `FragmentFiles`: where each fragment is while aria2c writes it and once it is complete, and
  the growing file complete fragments are appended to, in order, while the rest are still
  downloading (as yt-dlp's own downloader does with `.part`), with a state file so a restart
  knows how much of it is good.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import urllib.parse
from collections.abc import Callable
from pathlib import Path

_URL_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))


def aria2c_uri(url: str) -> str:
    """`url` as a line of aria2c's input file can hold it (existing escapes stay as they are)."""
    quoted = urllib.parse.quote(url, safe=_URL_SAFE)
    if urllib.parse.urlsplit(quoted).scheme.lower() not in ("http", "https"):
        raise ValueError(f"aria2c fetches only http(s) fragments, not {quoted[:80]!r}")
    return quoted


def manifest_is_safe_for_aria2c(manifest: str) -> bool:
    """Media playlists aria2c can fetch fragment by fragment: no byte ranges (one URL, many
    pieces) and no fragment URI of another scheme (magnet:, ftp:, data: ...)."""
    if "BYTERANGE" in manifest:
        return False
    for raw in manifest.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        scheme = urllib.parse.urlsplit(line).scheme.lower()
        if scheme and scheme not in ("http", "https"):
            return False
    return True


class FragmentFiles:
    """Fragment `i`, complete: `<tmp>-Frag<i>`, yt-dlp's own name, so a native run and an aria2c
    run resume each other's finished fragments. While aria2c writes it: `<tmp>-Frag<i>.aria2c`,
    next to aria2c's `.aria2` control file, which aria2c creates with the file and removes once
    the fragment is complete (a native run never reads that name, so it cannot take a half-written
    fragment for a finished one). Complete fragments are appended in order to
    `<tmp>.aria2c-joined`, renamed to `<tmp>` when the last is in; `.aria2c-joined.state` says
    how many and how long the file was after the last one. (Not `<tmp>` itself: a native run
    that finds a `.part` without its own `.ytdl` appends to it, and the two would mix.)"""

    def __init__(self, tmpfilename: str, indices: list[int]) -> None:
        self.indices = indices  # in playlist order
        self.tmp = tmpfilename
        self.part = Path(f"{tmpfilename}.aria2c-joined")
        self.state = Path(f"{tmpfilename}.aria2c-joined.state")
        self.appended = 0  # indices[:appended] are in `part`
        self.part_size = 0
        self._done_sizes: dict[int, int] = {}
        self._seen_control: set[int] = set()

    def done(self, index: int) -> Path:
        return Path(f"{self.tmp}-Frag{index}")

    def writing(self, index: int) -> Path:
        return Path(f"{self.tmp}-Frag{index}.aria2c")

    def control(self, index: int) -> Path:
        return Path(f"{self.tmp}-Frag{index}.aria2c.aria2")

    def prepare(self) -> None:
        """Before aria2c starts: keep what an earlier aria2c run appended, adopt finished
        fragments. A half-written
        fragment keeps its control file and aria2c resumes it from there (saved every second, so
        a kill costs at most a second of it); deleting the control file to resume from the
        file's length would leave a half-written fragment that looks finished to the next run."""
        try:
            appended, size = (int(n) for n in self.state.read_text().split())
        except (OSError, ValueError):
            appended, size = 0, 0
        self.part.touch()
        if self.part.stat().st_size < size or appended > len(self.indices):
            appended, size = 0, 0
        os.truncate(self.part, size)  # an append the state file does not know of is dropped
        self.appended, self.part_size = appended, size
        for index in self.indices[:appended]:
            self.done(index).unlink(missing_ok=True)  # appended before the kill, not yet removed
        self.collect(running=False)

    def collect(self, *, running: bool) -> None:
        """Move fragments aria2c finished to their final name. While it runs, a fragment counts as
        finished only once its control file was seen and is gone again: aria2c opens the file a
        moment before it writes the control file."""
        for index in self.pending():
            done, writing = self.done(index), self.writing(index)
            if done.is_file():
                self._done_sizes[index] = done.stat().st_size
                continue
            try:
                size = writing.stat().st_size
            except FileNotFoundError:
                continue
            if self.control(index).exists():
                self._seen_control.add(index)
                continue
            if running and index not in self._seen_control:
                continue
            if size == 0:
                writing.unlink()  # created, never written: start over
                continue
            writing.rename(done)
            self._done_sizes[index] = size

    def append_ready(self, transform: Callable[[int, bytes], bytes] | None = None) -> None:
        """Append the complete fragments that come next, in order, and delete them. `transform`
        (position, bytes) -> bytes decrypts where the playlist says so."""
        with open(self.part, "r+b") as part:
            part.seek(self.part_size)
            while self.appended < len(self.indices) and self.indices[self.appended] in self._done_sizes:
                index = self.indices[self.appended]
                with open(self.done(index), "rb") as fragment:
                    if transform is None:
                        shutil.copyfileobj(fragment, part, 1 << 20)
                    else:
                        part.write(transform(self.appended, fragment.read()))
                part.flush()
                self.appended, self.part_size = self.appended + 1, part.tell()
                scratch = self.state.with_name(self.state.name + ".tmp")
                scratch.write_text(f"{self.appended} {self.part_size}\n")
                os.replace(scratch, self.state)
                self.done(index).unlink()
                del self._done_sizes[index]

    def pending(self) -> list[int]:
        """Fragments neither appended nor complete on disk."""
        return [i for i in self.indices[self.appended :] if i not in self._done_sizes]

    def complete(self) -> bool:
        return self.appended == len(self.indices)

    def bytes_on_disk(self) -> tuple[int, int]:
        """(bytes held, of which in complete fragments and `.part`)."""
        finished = self.part_size + sum(self._done_sizes.values())
        writing = 0
        for index in self.pending():
            with contextlib.suppress(FileNotFoundError):  # not started, or already renamed
                writing += self.writing(index).stat().st_size
        return finished + writing, finished

    def finished_count(self) -> int:
        return self.appended + len(self._done_sizes)

    def finish(self) -> None:
        """All appended: the joined file becomes `<tmp>`, the rest goes."""
        os.replace(self.part, self.tmp)
        self.state.unlink(missing_ok=True)
        for index in self.indices:
            for path in (self.done(index), self.writing(index), self.control(index)):
                path.unlink(missing_ok=True)
