"""Reading uploads: a byte cap and a deadline enforced while reading, multipart or raw image
bodies, clear errors.

Everything here raises `HTTPException` with the status the API promises: 408 for a body that does
not arrive in time, 413 for too many bytes or images, 415 for a body that is neither
multipart/form-data nor image/*, 400 for a malformed multipart body, 422 for a multipart body
without an `image` field; and `ClientGone` when the client disconnects while sending.
"""

from __future__ import annotations

import asyncio

from fastapi import HTTPException, Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from .errors import ClientGone

CLOSE = {"Connection": "close"}  # the rest of an unread body must not be parsed as a next request


async def read_body(request: Request, max_bytes: int, timeout_s: float) -> bytes:
    """The whole body, or 413 once it passes `max_bytes`, or 408 when it has not all arrived within
    `timeout_s` (a body shorter than its Content-Length, or a slow client). Past the cap the rest is
    still read (and dropped) up to 16x the cap, so that a client still sending receives the 413
    rather than a reset connection; beyond that (or a declared length beyond that) reading stops."""
    give_up = 16 * max_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > give_up:
        raise HTTPException(413, f"request body of {int(declared):,} bytes; the limit is {max_bytes:,}", headers=CLOSE)
    chunks, size = [], 0

    async def read() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size <= max_bytes:
                chunks.append(chunk)
            elif size > give_up:
                return

    try:
        await asyncio.wait_for(read(), timeout_s)
    except asyncio.TimeoutError:
        expected = f" of the {int(declared):,} declared" if declared is not None and declared.isdigit() else ""
        raise HTTPException(408, f"request body not received within {timeout_s:g} s ({size:,} bytes{expected} arrived)", headers=CLOSE) from None
    except ClientDisconnect:
        raise ClientGone(f"while sending the body ({size:,} bytes arrived)") from None
    if size > max_bytes:
        raise HTTPException(413, f"request body of more than {max_bytes:,} bytes; the limit is {max_bytes:,}", headers=CLOSE)
    return b"".join(chunks)


def multipart_boundary(content_type: str) -> bytes:
    """The boundary parameter of a multipart/form-data content type (400 when there is none)."""
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.strip().partition("=")
        if name.strip().lower() == "boundary" and value.strip().strip('"'):
            return value.strip().strip('"').encode("latin-1")
    raise HTTPException(400, "malformed multipart body: the Content-Type has no boundary parameter")


async def _once(body: bytes):
    yield body


async def read_images(request: Request, max_bytes: int, max_images: int, timeout_s: float) -> list[bytes]:
    """Encoded images of a request: every multipart field named `image`, or a raw image/* body."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "multipart/form-data" and not media_type.startswith("image/"):
        raise HTTPException(
            415,
            f"unsupported media type {media_type or '(none)'!r}: send multipart/form-data with one or more "
            "'image' fields, or a raw body with an image/* content type",
        )
    boundary = multipart_boundary(request.headers["content-type"]) if media_type == "multipart/form-data" else b""
    body = await read_body(request, max_bytes, timeout_s)
    if media_type.startswith("image/"):
        return [body]
    if b"--" + boundary + b"--" not in body:  # the parser would accept a cut-off body silently
        raise HTTPException(400, f"malformed multipart body: no closing boundary '--{boundary.decode('latin-1')}--' (body cut off?)")
    try:
        form = await MultiPartParser(request.headers, _once(body), max_files=max_images + 16, max_fields=64).parse()
    except MultiPartException as exc:
        raise HTTPException(400, f"malformed multipart body: {exc.message}") from None
    try:
        parts = form.getlist("image")
        if not parts:
            raise HTTPException(422, "no 'image' field in the multipart body (send the file as field 'image')")
        if len(parts) > max_images:
            raise HTTPException(413, f"{len(parts)} images in one request; the limit is {max_images}")
        return [await p.read() if isinstance(p, UploadFile) else p.encode() for p in parts]
    finally:
        await form.close()
