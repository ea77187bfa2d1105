"""The API's errors: each `ApiError` subclass carries its status code; `render` draws them all.

The service and the handlers raise these; nothing else chooses an error status.
"""

from __future__ import annotations

import json
from typing import ClassVar


class ApiError(Exception):
    """An error answer. `message` is the explanation shown to the client."""

    status_code: ClassVar[int] = 500
    title: ClassVar[str] = "Internal Server Error"

    def __init__(self, message: str = "", *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message or self.title)
        self.message = message or self.title
        self.headers = headers or {}


class BadRequest(ApiError):
    status_code = 400
    title = "Bad Request"


class Unauthorized(ApiError):
    status_code = 401
    title = "Unauthorized"


class Forbidden(ApiError):
    status_code = 403
    title = "Forbidden"


class NotFound(ApiError):
    status_code = 404
    title = "Not Found"


class MethodNotAllowed(ApiError):
    status_code = 405
    title = "Method Not Allowed"


class Conflict(ApiError):
    status_code = 409
    title = "Conflict"


class Gone(ApiError):
    status_code = 410
    title = "Gone"


class PreconditionFailed(ApiError):
    status_code = 412
    title = "Precondition Failed"


class TooLarge(ApiError):
    status_code = 413
    title = "Request Entity Too Large"


class UnsupportedMediaType(ApiError):
    status_code = 415
    title = "Unsupported Media Type"


class RangeNotSatisfiable(ApiError):
    status_code = 416
    title = "Requested Range Not Satisfiable"


class HeaderTooLarge(ApiError):
    status_code = 431
    title = "Request Header Fields Too Large"


class NotImplementedMethod(ApiError):
    status_code = 501
    title = "Not Implemented"


class ServiceUnavailable(ApiError):
    status_code = 503
    title = "Service Unavailable"


def prefers_json(accept: str) -> bool:
    """Whether an Accept header ranks application/json above text/plain and text/html."""
    best_json = 0.0
    best_other = 0.0
    for part in accept.split(","):
        media, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        media = media.strip().lower()
        if media in {"application/json", "application/*"}:
            best_json = max(best_json, quality)
        elif media in {"text/plain", "text/html", "text/*", "*/*"}:
            best_other = max(best_other, quality)
    return best_json > 0 and best_json >= best_other


def render(error: ApiError, *, accept: str, head: bool) -> tuple[str, bytes]:
    """The content type and body of an error answer (empty for HEAD)."""
    status = f"{error.status_code} {error.title}"
    if prefers_json(accept):
        body = json.dumps({"message": error.message, "code": status, "title": error.title})
        return "application/json", b"" if head else body.encode()
    text = f"{status}\n\n{error.message}\n"
    return "text/plain; charset=UTF-8", b"" if head else text.encode()


class RequestTimeout(ApiError):
    """A request body stalled or came too slowly: the rest of it is never read, so the
    answer closes the connection (its framing is lost)."""

    status_code = 408
    title = "Request Timeout"

    def __init__(self, message: str = "") -> None:
        super().__init__(message, headers={"connection": "close"})


class TooManyRequests(ApiError):
    status_code = 429
    title = "Too Many Requests"
