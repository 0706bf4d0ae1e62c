"""The document layout and the Google seam, without an emulator."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from google.api_core import exceptions as gexc

from stream_gateway import (
    InvalidArgumentError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnavailableError,
)
from stream_gateway.streams import StreamRecord, Terminal
from stream_gateway_firestore._google import translated
from stream_gateway_firestore._layout import (
    MAX_BATCH_BYTES,
    Batch,
    batch_id,
    check_stream_id,
    decode_chunks,
    plan_batches,
    record_fields,
    record_from_fields,
)
from stream_gateway_firestore._reads import assemble

STAMP = datetime(2030, 1, 1, tzinfo=UTC)


def google_error(cls: type[Exception], message: str) -> Exception:
    """``cls(message)``: the google.api_core exception classes are untyped to mypy."""
    return cls(message)


def test_batch_ids_sort_like_offsets() -> None:
    ids = [batch_id(n) for n in (0, 9, 10, 999_999, 1_000_000)]
    assert ids == sorted(ids) and ids[0] == "000000000000" and len(ids[-1]) == 12


def test_small_chunks_make_one_batch() -> None:
    chunks = [b'"tok%d"' % i for i in range(300)]
    assert plan_batches(40, chunks) == [Batch(40, chunks)]


def test_batches_split_below_the_document_limit() -> None:
    chunks = [b"x" * 100_000 for _ in range(25)]
    plan = plan_batches(7, chunks)
    assert [b.offset for b in plan] == [7, 16, 25]
    assert [len(b.chunks) for b in plan] == [9, 9, 7]
    assert all(b.nbytes <= MAX_BATCH_BYTES for b in plan)
    assert [c for b in plan for c in b.chunks] == chunks


def test_a_retry_replays_the_earlier_split() -> None:
    first = [b"a" * 500_000, b"b" * 300_000]
    earlier = [len(b.chunks) for b in plan_batches(0, first)]
    assert earlier == [2]
    # The retry carries more chunks: the first document keeps its two, unchanged.
    retry = plan_batches(0, [*first, b"c"], earlier)
    assert [(b.offset, len(b.chunks)) for b in retry] == [(0, 2), (2, 1)]


def test_a_chunk_too_big_for_any_document_is_refused() -> None:
    with pytest.raises(ResourceExhaustedError):
        plan_batches(0, [b"x" * 1_100_000])


def test_chunks_round_trip_as_a_blob_or_a_list() -> None:
    plain = Batch(3, [b"1", b'"a"', b"{}"])
    assert plain.fields(STAMP)["chunks"] == b'1\n"a"\n{}'
    assert decode_chunks(plain.fields(STAMP)) == (3, [b"1", b'"a"', b"{}"])
    raw = Batch(0, [b"[\n1]", b"2"])
    assert decode_chunks(raw.fields(STAMP)) == (0, [b"[\n1]", b"2"])
    with pytest.raises(ValueError):
        decode_chunks({"offset": 0, "count": 3, "chunks": b"1\n2"})


def test_assemble_takes_a_window_and_refuses_gaps() -> None:
    docs = [Batch(0, [b"0", b"1", b"2"]).fields(STAMP), Batch(3, [b"3", b"4"]).fields(STAMP)]
    assert assemble(docs, 1, 4) == [b"1", b"2", b"3"]
    assert assemble(docs, 5, 9) == []
    with pytest.raises(Exception, match="gone"):
        assemble(docs[1:], 1, 4)


@pytest.mark.parametrize("good", ["a" * 16, "Ab-_09" * 5, "x" * 128, "__not_reserved__x"])
def test_good_ids(good: str) -> None:
    assert check_stream_id(good) == good


@pytest.mark.parametrize(
    "bad", ["a" * 15, "x" * 129, "a/b" * 8, "dots.are.not.allowed", "__reserved_shape__", 42, None]
)
def test_bad_ids(bad: object) -> None:
    with pytest.raises(InvalidArgumentError):
        check_stream_id(bad)


def test_records_round_trip() -> None:
    record = StreamRecord(
        "round-trip-stream-01",
        "chat",
        created_at=1_700_000_000.25,
        updated_at=1_700_000_001.5,
        expires_at=1_700_003_600.75,
        owner="abc",
        status="error",
        length=12,
        lease_until=None,
        cancel_requested=True,
        terminal=Terminal("error", b'{"status":"INTERNAL","message":"x"}'),
        extra={"k": 1},
    )
    fields = record_fields(record, "token")
    assert fields["create_token"] == "token"
    assert record_from_fields(record.stream_id, fields) == record


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (google_error(gexc.ServiceUnavailable, "down"), UnavailableError),
        (google_error(gexc.DeadlineExceeded, "slow"), UnavailableError),
        (google_error(gexc.Aborted, "contention"), UnavailableError),
        (google_error(gexc.Cancelled, "by the server"), UnavailableError),
        (ConnectionResetError("reset"), UnavailableError),
        (google_error(gexc.PermissionDenied, "rules"), PermissionDeniedError),
    ],
)
def test_google_errors_are_translated(raised: Exception, expected: type[Exception]) -> None:
    with pytest.raises(expected) as caught, translated("testing"):
        raise raised
    assert caught.value.__cause__ is raised
    assert "testing" in str(caught.value)


def test_unexpected_errors_pass_through() -> None:
    with pytest.raises(gexc.NotFound), translated("testing"):
        raise google_error(gexc.NotFound, "no such thing")
