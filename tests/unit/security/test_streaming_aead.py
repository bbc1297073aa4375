"""Streaming AEAD: round trips, Range reads that fetch only their segments, and every way a
ciphertext can be tampered with (bit flips, truncation at a segment boundary, reordering,
another record's associated data, the wrong key)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reelhouse.core.security.crypto import DecryptionFailed
from reelhouse.core.security.streaming import (
    HEADER_BYTES,
    MIN_SEGMENT_SIZE,
    TAG_BYTES,
    SegmentLayout,
    StreamFormatError,
    StreamingAead,
    ciphertext_size,
    new_data_key,
)

SEGMENT = MIN_SEGMENT_SIZE  # small segments so short inputs span many of them
AAD = b"vault/message/1/media"


class RecordingReader:
    """A Range reader over bytes that remembers which byte ranges were fetched."""

    def __init__(self, data: bytes, chunk: int = 1500) -> None:
        self.data, self.chunk, self.reads = data, chunk, []

    async def __call__(self, start: int, end: int) -> AsyncIterator[bytes]:
        self.reads.append((start, end))
        piece = self.data[start : end + 1]
        for offset in range(0, len(piece), self.chunk):
            yield piece[offset : offset + self.chunk]


async def read_range(aead: StreamingAead, data: bytes, start: int, end: int | None, aad: bytes = AAD) -> bytes:
    return b"".join([part async for part in aead.decrypt_range(RecordingReader(data), len(data), aad, start, end)])


async def chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


@pytest.mark.parametrize("length", [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT, 5 * SEGMENT + 17])
def test_round_trip_and_size_formula(length: int) -> None:
    aead = StreamingAead(new_data_key(), SEGMENT)
    plaintext = os.urandom(length)
    sealed = aead.encrypt(plaintext, AAD)
    assert len(sealed) == ciphertext_size(length, SEGMENT)
    assert SegmentLayout(SEGMENT, len(sealed)).plaintext_size == length
    assert aead.decrypt(sealed, AAD) == plaintext


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=6 * SEGMENT), pieces=st.integers(1, 5000))
async def test_streamed_encryption_matches_any_chunking(data: bytes, pieces: int) -> None:
    aead = StreamingAead(new_data_key(), SEGMENT)
    sealed = b"".join([part async for part in aead.encrypt_stream(chunks(data, pieces), AAD)])
    assert aead.decrypt(sealed, AAD) == data


@settings(max_examples=80, deadline=None)
@given(length=st.integers(1, 7 * SEGMENT), bounds=st.tuples(st.floats(0, 1), st.floats(0, 1)))
async def test_any_range_decrypts_to_the_same_bytes(length: int, bounds: tuple[float, float]) -> None:
    aead = StreamingAead(new_data_key(), SEGMENT)
    plaintext = os.urandom(length)
    sealed = aead.encrypt(plaintext, AAD)
    start, end = sorted(int(b * (length - 1)) for b in bounds)
    assert await read_range(aead, sealed, start, end) == plaintext[start : end + 1]


async def test_range_read_fetches_only_header_and_needed_segments() -> None:
    aead = StreamingAead(new_data_key(), SEGMENT)
    plaintext = os.urandom(100 * SEGMENT)
    sealed = aead.encrypt(plaintext, AAD)
    reader = RecordingReader(sealed)
    start = 97 * SEGMENT + 10
    got = b"".join([p async for p in aead.decrypt_range(reader, len(sealed), AAD, start, start + 100)])
    assert got == plaintext[start : start + 101]
    sealed_segment = SEGMENT + TAG_BYTES
    assert reader.reads == [
        (0, HEADER_BYTES - 1),
        (HEADER_BYTES + 97 * sealed_segment, HEADER_BYTES + 98 * sealed_segment - 1),
    ]
    fetched = sum(e - s + 1 for s, e in reader.reads)
    assert fetched < 2 * SEGMENT  # O(1) in the object size


async def test_flipped_bit_in_any_segment_or_header_fails() -> None:
    aead = StreamingAead(new_data_key(), SEGMENT)
    sealed = bytearray(aead.encrypt(os.urandom(3 * SEGMENT + 5), AAD))
    for position in (9, HEADER_BYTES - 1, HEADER_BYTES + 3, HEADER_BYTES + SEGMENT + TAG_BYTES + 7, len(sealed) - 1):
        tampered = bytearray(sealed)
        tampered[position] ^= 0x01
        with pytest.raises((DecryptionFailed, StreamFormatError)):
            aead.decrypt(bytes(tampered), AAD)


async def test_truncation_at_a_segment_boundary_is_detected() -> None:
    aead = StreamingAead(new_data_key(), SEGMENT)
    sealed = aead.encrypt(os.urandom(3 * SEGMENT + 5), AAD)
    two_segments = HEADER_BYTES + 2 * (SEGMENT + TAG_BYTES)
    with pytest.raises(DecryptionFailed):
        aead.decrypt(sealed[:two_segments], AAD)
    with pytest.raises(DecryptionFailed):
        await read_range(aead, sealed[:two_segments], 0, None)


def test_reordered_segments_fail() -> None:
    aead = StreamingAead(new_data_key(), SEGMENT)
    sealed = aead.encrypt(os.urandom(3 * SEGMENT), AAD)
    size = SEGMENT + TAG_BYTES
    first, second = sealed[HEADER_BYTES : HEADER_BYTES + size], sealed[HEADER_BYTES + size : HEADER_BYTES + 2 * size]
    swapped = sealed[:HEADER_BYTES] + second + first + sealed[HEADER_BYTES + 2 * size :]
    with pytest.raises(DecryptionFailed):
        aead.decrypt(swapped, AAD)


async def test_other_records_associated_data_and_wrong_key_fail() -> None:
    key = new_data_key()
    sealed = StreamingAead(key, SEGMENT).encrypt(b"x" * 10_000, AAD)
    with pytest.raises(DecryptionFailed):
        StreamingAead(key, SEGMENT).decrypt(sealed, b"vault/message/2/media")
    with pytest.raises(DecryptionFailed):
        await read_range(StreamingAead(new_data_key(), SEGMENT), sealed, 5000, 5100)


def test_same_key_and_plaintext_never_give_the_same_ciphertext() -> None:
    aead = StreamingAead(new_data_key(), SEGMENT)
    assert aead.encrypt(b"same bytes", AAD) != aead.encrypt(b"same bytes", AAD)


def test_not_a_stream_and_short_objects_are_format_errors() -> None:
    aead = StreamingAead(new_data_key(), SEGMENT)
    with pytest.raises(StreamFormatError):
        aead.decrypt(b"plain video bytes, not encrypted at all" * 10, AAD)
    with pytest.raises(StreamFormatError):
        _ = SegmentLayout(SEGMENT, HEADER_BYTES + 3).plaintext_size


async def test_storage_returning_short_data_is_an_error_not_silent_truncation() -> None:
    aead = StreamingAead(new_data_key(), SEGMENT)
    sealed = aead.encrypt(os.urandom(4 * SEGMENT), AAD)

    async def short_reader(start: int, end: int) -> AsyncIterator[bytes]:
        yield sealed[start : min(end + 1, start + 100)] if start else sealed[start : end + 1]

    with pytest.raises(StreamFormatError):
        b"".join([p async for p in aead.decrypt_range(short_reader, len(sealed), AAD, SEGMENT, 3 * SEGMENT)])
