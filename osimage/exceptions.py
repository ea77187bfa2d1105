"""Exceptions raised by the SDK.

SDKException
 +-- HttpException             .status_code, .request_id, .response, .details
 |    +-- BadRequestException  400
 |    +-- ForbiddenException   403
 |    +-- NotFoundException    404, also exported as ResourceNotFound
 |    +-- ConflictException    409
 +-- DuplicateResource         find() matched more than one
 +-- InvalidRequest            refused before anything was sent
 +-- InvalidResponse           the server broke the protocol (wraps WireError)
 |    +-- ChecksumMismatch     downloaded data differs from its declared size/checksums
 +-- MethodNotSupported        the resource does not allow that verb
 +-- ResourceTimeout           a wait_for_* ran out of time
 +-- ResourceFailure           a wait_for_status saw a failure status

`raise_from_response` is the one function that turns a response into an exception.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import requests


class SDKException(Exception):
    """The base of every exception the SDK raises."""

    def __init__(self, message: str | None = None, extra_data: Any = None) -> None:
        self.message = message or self.__class__.__name__
        self.extra_data = extra_data
        super().__init__(self.message)


class HttpException(SDKException):
    """The server answered with an error status."""

    def __init__(
        self,
        message: str = "Error",
        response: requests.Response | None = None,
        details: str | None = None,
        request_id: str | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.response = response
        self.details = details
        self.request_id = request_id
        self.status_code = (
            http_status
            if http_status is not None
            else (response.status_code if response is not None else None)
        )

    def __str__(self) -> str:
        parts = [f"HTTP {self.status_code}: {self.message}" if self.status_code else self.message]
        if self.details and self.details not in self.message:
            parts.append(self.details)
        if self.request_id:
            parts.append(f"request id {self.request_id}")
        return ", ".join(parts)


class BadRequestException(HttpException):
    """HTTP 400."""


class ForbiddenException(HttpException):
    """HTTP 403."""


class NotFoundException(HttpException):
    """HTTP 404, or nothing matched where something had to."""


ResourceNotFound = NotFoundException


class ConflictException(HttpException):
    """HTTP 409."""


class DuplicateResource(SDKException):
    """More than one resource matched a find()."""


class InvalidRequest(SDKException):
    """A request the SDK refused to send."""


class InvalidResponse(SDKException):
    """A response that breaks the protocol."""


class ChecksumMismatch(InvalidResponse):
    """Downloaded image data does not match the size or checksums the server declared."""


class MethodNotSupported(SDKException):
    """The resource does not support this verb."""

    def __init__(self, resource: type | object, method: str) -> None:
        name = resource.__name__ if isinstance(resource, type) else type(resource).__name__
        super().__init__(f"The {method} method is not supported for {name}")


class ResourceTimeout(SDKException):
    """A resource did not reach the awaited state in time."""


class ResourceFailure(SDKException):
    """A resource reached a failure state while being waited on."""


_BY_STATUS: dict[int, type[HttpException]] = {
    400: BadRequestException,
    403: ForbiddenException,
    404: NotFoundException,
    409: ConflictException,
}
_TAGS = re.compile(r"<[^>]+>")


def _details(response: requests.Response) -> str | None:
    text = response.text if response.content else ""
    if not text:
        return None
    if "json" in response.headers.get("content-type", ""):
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        if isinstance(body, dict):
            inner = body.get("error", body)
            if isinstance(inner, dict) and "message" in inner:
                return " ".join(_TAGS.sub(" ", str(inner["message"])).split())
    return " ".join(_TAGS.sub(" ", text).split()) or None


def raise_from_response(response: requests.Response, error_message: str | None = None) -> None:
    """Raise the exception matching an error response; return quietly on success."""
    if response.status_code < 400:
        return
    details = _details(response)
    cls = _BY_STATUS.get(response.status_code, HttpException)
    message = error_message or details or response.reason or "Error"
    raise cls(
        message=message,
        response=response,
        details=details,
        request_id=response.headers.get("x-openstack-request-id"),
        http_status=response.status_code,
    )
