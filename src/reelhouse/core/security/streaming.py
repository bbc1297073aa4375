"""Streaming AEAD for large media: AES-256-GCM in fixed-size segments, seekable.

The design is Tink's AES-GCM-HKDF streaming AEAD (also age's STREAM): an object is a short
header followed by segments that each authenticate on their own, so a reader can decrypt any
byte range by fetching only the segments that hold it, and memory stays at one segment.

    header   = "RHS1" | segment size (u32 BE) | salt (16) | nonce prefix (7)      31 bytes
    segment  = AES-GCM(object key, nonce, plaintext[i*P:(i+1)*P]) with its 16-byte tag
    nonce    = nonce prefix (7) | segment index (u32 BE) | last-segment flag (1)
    object key = HKDF-SHA256(data key, salt, "reelhouse/streaming/v1|" + associated data)

- The per-object key (random salt) lets one data key encrypt many objects (a message's source
  and rendition) without ever reusing a (key, nonce) pair.
- The index in the nonce stops segments being reordered or moved between positions; the last
  flag stops truncation at a segment boundary (the new final segment was sealed as "not last").
- The associated data (e.g. `vault/message/12/media`) is bound through the key: a ciphertext
  copied to another record does not decrypt. Changing the header changes key or nonces, so a
  tampered header fails authentication like a tampered segment.

Ciphertext size is `header + n_segments * 16 + plaintext size` with
`n_segments = max(1, ceil(plaintext / P))`, so plaintext offsets map to ciphertext offsets by
arithmetic alone: a Range request costs O(1) work however large the object.
"""

from __future__ import annotations

import os
import struct
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from reelhouse.core.security.crypto import CryptoError, DecryptionFailed

MAGIC = b"RHS1"
SALT_BYTES = 16
NONCE_PREFIX_BYTES = 7
TAG_BYTES = 16
KEY_BYTES = 32
HEADER_BYTES = len(MAGIC) + 4 + SALT_BYTES + NONCE_PREFIX_BYTES
DEFAULT_SEGMENT_SIZE = 1 << 20
"""1 MiB, as Tink's AES256_GCM_HKDF_1MB: per-segment overhead is noise, and a Range request
decrypts at most one extra MiB at each end."""
MIN_SEGMENT_SIZE = 4 << 10
MAX_SEGMENT_SIZE = 16 << 20
MAX_SEGMENTS = 2**32 - 1
_INFO = b"reelhouse/streaming/v1|"

RangeReader = Callable[[int, int], AsyncIterator[bytes]]
"""`read(start, end_inclusive)` streams those ciphertext bytes (e.g. `storage.get(key, (s, e))`)."""


class StreamFormatError(CryptoError):
    """Not a reelhouse stream, or its size does not fit the segment layout (truncated)."""


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


@dataclass(frozen=True, slots=True)
class StreamHeader:
    segment_size: int
    salt: bytes
    nonce_prefix: bytes

    def encode(self) -> bytes:
        return MAGIC + struct.pack(">I", self.segment_size) + self.salt + self.nonce_prefix

    @classmethod
    def parse(cls, data: bytes) -> StreamHeader:
        if len(data) < HEADER_BYTES or data[: len(MAGIC)] != MAGIC:
            raise StreamFormatError("not a reelhouse encrypted stream (bad header)")
        (segment_size,) = struct.unpack(">I", data[4:8])
        if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
            raise StreamFormatError(f"segment size {segment_size} is outside the supported range")
        salt = bytes(data[8 : 8 + SALT_BYTES])
        prefix = bytes(data[8 + SALT_BYTES : HEADER_BYTES])
        return cls(segment_size, salt, prefix)


@dataclass(frozen=True, slots=True)
class SegmentLayout:
    """Where plaintext bytes live in a ciphertext of a known size."""

    segment_size: int
    ciphertext_size: int

    @property
    def sealed_segment(self) -> int:
        return self.segment_size + TAG_BYTES

    @property
    def segment_count(self) -> int:
        body = self.ciphertext_size - HEADER_BYTES
        if body < TAG_BYTES:
            raise StreamFormatError("ciphertext is truncated (shorter than one segment)")
        count = -(-body // self.sealed_segment)
        if body - (count - 1) * self.sealed_segment < TAG_BYTES:
            raise StreamFormatError("ciphertext is truncated (last segment shorter than its tag)")
        return count

    @property
    def plaintext_size(self) -> int:
        return self.ciphertext_size - HEADER_BYTES - self.segment_count * TAG_BYTES

    def ciphertext_span(self, first_segment: int, last_segment: int) -> tuple[int, int]:
        """Inclusive ciphertext offsets of segments `first..last`."""
        start = HEADER_BYTES + first_segment * self.sealed_segment
        end = min(HEADER_BYTES + (last_segment + 1) * self.sealed_segment, self.ciphertext_size) - 1
        return start, end


def ciphertext_size(plaintext_size: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    segments = max(1, -(-plaintext_size // segment_size))
    return HEADER_BYTES + segments * TAG_BYTES + plaintext_size


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    if index > MAX_SEGMENTS:
        raise CryptoError("stream too long for its segment size")
    return prefix + struct.pack(">IB", index, 1 if last else 0)


class StreamingAead:
    """One data key (32 bytes); `encryptor`/`decrypt_*` for objects under it."""

    def __init__(self, data_key: bytes, segment_size: int = DEFAULT_SEGMENT_SIZE) -> None:
        if len(data_key) != KEY_BYTES:
            raise CryptoError("streaming data key must be 32 bytes")
        if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
            raise CryptoError(f"segment size must be {MIN_SEGMENT_SIZE}..{MAX_SEGMENT_SIZE} bytes")
        self._key = data_key
        self.segment_size = segment_size

    def _cipher(self, header: StreamHeader, associated_data: bytes) -> AESGCM:
        derived = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=header.salt, info=_INFO + associated_data)
        return AESGCM(derived.derive(self._key))

    def encryptor(self, associated_data: bytes) -> SegmentEncryptor:
        header = StreamHeader(self.segment_size, os.urandom(SALT_BYTES), os.urandom(NONCE_PREFIX_BYTES))
        return SegmentEncryptor(header, self._cipher(header, associated_data))

    async def encrypt_stream(self, source: AsyncIterable[bytes], associated_data: bytes) -> AsyncIterator[bytes]:
        """Ciphertext chunks of `source`, header first; holds at most one segment of plaintext."""
        encryptor = self.encryptor(associated_data)
        yield encryptor.header
        async for chunk in source:
            for sealed in encryptor.update(chunk):
                yield sealed
        yield encryptor.finish()

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
        encryptor = self.encryptor(associated_data)
        return b"".join([encryptor.header, *encryptor.update(plaintext), encryptor.finish()])

    def decrypt(self, ciphertext: bytes, associated_data: bytes) -> bytes:
        header = StreamHeader.parse(ciphertext[:HEADER_BYTES])
        layout = SegmentLayout(header.segment_size, len(ciphertext))
        decryptor = SegmentDecryptor(header, self._cipher(header, associated_data), layout)
        out = bytearray()
        for index in range(layout.segment_count):
            start, end = layout.ciphertext_span(index, index)
            out += decryptor.open(index, ciphertext[start : end + 1])
        return bytes(out)

    async def decrypt_range(
        self,
        read: RangeReader,
        ciphertext_size: int,
        associated_data: bytes,
        start: int = 0,
        end: int | None = None,
    ) -> AsyncIterator[bytes]:
        """Plaintext bytes `start..end` (inclusive; None: to the end), reading only the header and
        the segments that hold them. Raises `DecryptionFailed` on the first segment that does not
        authenticate, before any of its bytes are yielded."""
        header = StreamHeader.parse(await _read_all(read(0, HEADER_BYTES - 1), HEADER_BYTES))
        layout = SegmentLayout(header.segment_size, ciphertext_size)
        size = layout.plaintext_size
        end = size - 1 if end is None else min(end, size - 1)
        if size == 0 or start > end:
            return
        decryptor = SegmentDecryptor(header, self._cipher(header, associated_data), layout)
        segment_size = header.segment_size
        first, last = start // segment_size, end // segment_size
        span_start, span_end = layout.ciphertext_span(first, last)
        index = first
        pending = bytearray()
        async for chunk in read(span_start, span_end):
            pending += chunk
            while len(pending) >= layout.sealed_segment and index < last:
                plain = decryptor.open(index, bytes(pending[: layout.sealed_segment]))
                del pending[: layout.sealed_segment]
                yield _slice(plain, index, segment_size, start, end)
                index += 1
        expected = span_end - (HEADER_BYTES + last * layout.sealed_segment) + 1
        if index != last or len(pending) != expected:
            raise StreamFormatError("storage returned fewer ciphertext bytes than the object's size promises")
        yield _slice(decryptor.open(last, bytes(pending)), last, segment_size, start, end)


def _slice(plain: bytes, index: int, segment_size: int, start: int, end: int) -> bytes:
    base = index * segment_size
    return plain[max(start - base, 0) : end - base + 1]


async def _read_all(chunks: AsyncIterator[bytes], expected: int) -> bytes:
    data = bytearray()
    async for chunk in chunks:
        data += chunk
    if len(data) != expected:
        raise StreamFormatError("ciphertext is truncated (incomplete header)")
    return bytes(data)


class SegmentEncryptor:
    """Incremental encryption: `header`, then `update(data)` any number of times, then `finish()`.

    A segment is sealed only once more data follows it, because the last segment is sealed
    with a different nonce; so up to one segment of plaintext waits in the buffer.
    """

    def __init__(self, header: StreamHeader, cipher: AESGCM) -> None:
        self.header = header.encode()
        self._prefix = header.nonce_prefix
        self._size = header.segment_size
        self._cipher = cipher
        self._buffer = bytearray()
        self._index = 0
        self._finished = False

    def _seal(self, data: bytes | bytearray | memoryview, last: bool) -> bytes:
        sealed = self._cipher.encrypt(_nonce(self._prefix, self._index, last), data, None)
        self._index += 1
        return sealed

    def update(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        if self._finished:
            raise CryptoError("encryptor already finished")
        out: list[bytes] = []
        view = memoryview(data)
        if self._buffer:
            room = self._size - len(self._buffer)
            if len(view) <= room:
                self._buffer += view
                return out
            self._buffer += view[:room]
            view = view[room:]
            out.append(self._seal(self._buffer, last=False))
            self._buffer = bytearray()
        while len(view) > self._size:
            out.append(self._seal(view[: self._size], last=False))
            view = view[self._size :]
        self._buffer += view
        return out

    def finish(self) -> bytes:
        if self._finished:
            raise CryptoError("encryptor already finished")
        self._finished = True
        return self._seal(self._buffer, last=True)


class SegmentDecryptor:
    def __init__(self, header: StreamHeader, cipher: AESGCM, layout: SegmentLayout) -> None:
        self._prefix = header.nonce_prefix
        self._cipher = cipher
        self._last = layout.segment_count - 1

    def open(self, index: int, sealed: bytes) -> bytes:
        try:
            return self._cipher.decrypt(_nonce(self._prefix, index, index == self._last), sealed, None)
        except InvalidTag:
            raise DecryptionFailed(
                f"segment {index} does not authenticate (tampered, truncated, reordered, or the wrong key)"
            ) from None
