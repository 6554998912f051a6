"""Why a request was not answered with results, in terms every protocol of the app shares.

The service raises these; each protocol's routes turn them into its own error body (`/detect`:
`{"detail": ...}`). `status` is the HTTP status, the same for every protocol: 400 undecodable image,
413 too large, 415 unsupported image type, 422 bad options, 503 busy or not ready (with a
Retry-After), 504 timed out, 500 inference failed.
"""

from __future__ import annotations

RETRY_AFTER_S = 1  # the Retry-After of a 503 when nothing better is known


class RequestFailed(Exception):
    """A request the service cannot answer: HTTP `status`, `detail` for the client, and for a 503
    the seconds after which a retry may succeed."""

    def __init__(self, status: int, detail: str, retry_after_s: int | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {} if self.retry_after_s is None else {"Retry-After": str(self.retry_after_s)}


def busy(detail: str, retry_after_s: int = RETRY_AFTER_S) -> RequestFailed:
    """503: try again later."""
    return RequestFailed(503, detail, retry_after_s)


class ClientGone(Exception):
    """The client disconnected before its answer; `when` says at which step. Answered as 499."""

    def __init__(self, when: str):
        super().__init__(f"client disconnected {when}")
        self.when = when


def validation_detail(errors: list[dict]) -> str:
    """One line naming each invalid parameter, from FastAPI's RequestValidationError.errors()."""
    return "bad parameters: " + "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}" for e in errors)
