"""The body of a log or label batch posted to the API: read within bounds, gunzipped.

A batch is JSON lines, as a log or label file holds them, optionally gzip-compressed
(``Content-Encoding: gzip``). Its size is bounded as sent and once uncompressed (a few
kilobytes of gzip can expand to gigabytes), and so is its number of lines, so that one
request cannot hold the server's memory or a worker for long: beyond either, 413 and
nothing is read further. What the rows hold is the ingest layer's business
(``monitor.ingest.ingest_log_batch``), never this module's.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

from fastapi import HTTPException

__all__ = ["BatchTooLarge", "read_batch"]


class BatchTooLarge(HTTPException):
    def __init__(self, detail: str) -> None:
        super().__init__(413, detail)


async def read_batch(
    chunks: AsyncIterator[bytes],
    *,
    encoding: str | None,
    declared_length: str | None,
    max_bytes: int,
    max_rows: int,
) -> bytes:
    """The uncompressed body, at most ``max_bytes`` (sent and uncompressed) and
    ``max_rows`` lines. Raises ``HTTPException``: 413 beyond a bound, 415 for an
    encoding other than gzip or identity, 400 for no body or one that is not valid gzip."""
    coding = (encoding or "identity").strip().lower()
    if coding not in ("identity", "gzip", "x-gzip"):
        raise HTTPException(415, f"Content-Encoding {encoding!r} is not supported; send the "
                            "batch as is or gzip-compressed")
    too_large = (f"the batch is larger than {max_bytes:,} bytes (serve.ingest_max_bytes): "
                 "send it in smaller batches")
    if declared_length and declared_length.isdigit() and int(declared_length) > max_bytes:
        raise BatchTooLarge(too_large)
    sent = 0
    parts: list[bytes] = []
    # wbits 16 + MAX_WBITS: a gzip stream (header and trailer checked).
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if coding != "identity" else None
    size = 0
    async for chunk in chunks:
        sent += len(chunk)
        if sent > max_bytes:
            raise BatchTooLarge(too_large)
        if inflate is None:
            parts.append(chunk)
            continue
        try:
            # At most one byte past the bound: enough to know it is exceeded.
            data = inflate.decompress(chunk, max_bytes - size + 1)
        except zlib.error as exc:
            raise HTTPException(400, f"the body is not valid gzip: {exc}") from None
        size += len(data)
        if size > max_bytes or inflate.unconsumed_tail:
            raise BatchTooLarge(f"the batch is larger than {max_bytes:,} bytes once "
                                "uncompressed (serve.ingest_max_bytes): send smaller batches")
        parts.append(data)
    if not sent:
        raise HTTPException(400, "no body: send the batch as JSON lines, one row per line")
    if inflate is not None and not inflate.eof:
        raise HTTPException(400, "the body is not valid gzip: it ends before the gzip stream")
    body = b"".join(parts)
    # Lines, not rows: blank lines count too, which only makes the bound stricter.
    lines = body.count(b"\n") + (0 if body.endswith(b"\n") or not body else 1)
    if lines > max_rows:
        raise BatchTooLarge(f"the batch has {lines:,} lines, more than {max_rows:,} "
                            "(serve.ingest_max_rows): send it in smaller batches")
    return body
