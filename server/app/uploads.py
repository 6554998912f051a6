"""Reading uploads: a byte cap enforced while reading, multipart or raw image bodies, clear errors.

Everything here raises `HTTPException` with the status the API promises: 413 for too many bytes or
images, 415 for a body that is neither multipart/form-data nor image/*, 400 for a malformed
multipart body, 422 for a multipart body without an `image` field.
"""

from __future__ import annotations

from fastapi import HTTPException, Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The whole body, or 413 once it passes `max_bytes`. Past the cap the rest is still read (and
    dropped) up to 16x the cap, so that a client still sending receives the 413 rather than a reset
    connection; beyond that (or a declared length beyond that) reading stops at once."""
    give_up = 16 * max_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > give_up:
        raise HTTPException(413, f"request body of {int(declared):,} bytes; the limit is {max_bytes:,}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= max_bytes:
            chunks.append(chunk)
        elif size > give_up:
            break
    if size > max_bytes:
        raise HTTPException(413, f"request body of more than {max_bytes:,} bytes; the limit is {max_bytes:,}")
    return b"".join(chunks)


async def _once(body: bytes):
    yield body


async def read_images(request: Request, max_bytes: int, max_images: int) -> list[bytes]:
    """Encoded images of a request: every multipart field named `image`, or a raw image/* body."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "multipart/form-data" and not media_type.startswith("image/"):
        raise HTTPException(
            415,
            f"unsupported media type {media_type or '(none)'!r}: send multipart/form-data with one or more "
            "'image' fields, or a raw body with an image/* content type",
        )
    body = await read_body(request, max_bytes)
    if media_type.startswith("image/"):
        return [body]
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
