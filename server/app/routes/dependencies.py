"""What every route shares: API-key check, the ready service, the client's disconnection, documented errors."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from ..errors import busy
from ..schemas import ErrorBody
from ..service import Service

ERRORS = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        400: "undecodable image or malformed multipart body",
        408: "the request body did not arrive within the server's body timeout",
        401: "missing or wrong X-API-Key (when the server has one)",
        413: "too many bytes, pixels or images",
        415: "neither multipart/form-data nor image/*, or an unsupported image type",
        422: "bad parameters (with what was wrong), including a query parameter given twice",
        503: "busy: queue full, estimated wait too long, no room to decode, too many connections (retry after Retry-After seconds); or not ready",
        504: "the request waited longer than the server's request timeout",
    }.items()
}


def require_api_key(request: Request) -> None:
    key = request.app.state.settings.api_key
    if key is None:
        return
    given = request.headers.get("x-api-key", "")
    if not hmac.compare_digest(given.encode(), key.get_secret_value().encode()):
        raise HTTPException(401, "missing or wrong X-API-Key header", headers={"WWW-Authenticate": "ApiKey"})


def liveness_problem(request: Request) -> str | None:
    """None while the process can serve (or is still making its model); else what is wrong: the
    batch worker stopped or stuck, or the model could not be made."""
    service, pending = request.app.state.service, request.app.state.pending
    if service is not None:
        return service.health()
    return pending.detail if pending is not None and pending.state == "failed" else None


def readiness_problem(request: Request) -> str | None:
    """None when requests can be served now; else why not (being made, warming up, worker down)."""
    service, pending = request.app.state.service, request.app.state.pending
    if service is None:
        return pending.detail if pending is not None else "the model is still loading"
    return service.unready_reason()


def ready_service(request: Request) -> Service:
    """The service, or 503 with the reason it cannot serve now (warming up, worker stopped or stuck)."""
    problem = readiness_problem(request)
    if problem is not None:
        raise busy(f"not ready: {problem}")
    return request.app.state.service


ReadyService = Annotated[Service, Depends(ready_service)]


def until_disconnected(request: Request):
    """A coroutine function that returns once the client of `request` has disconnected (what
    Service.run_detection races against, so a request whose client left leaves the queue)."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    return disconnected
