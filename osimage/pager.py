"""The list pager: limit/marker pages, the next one requested ahead in a worker thread.

`read_pages` knows nothing of resources: it asks `start` for each page (an `Answer`),
reads its records and yields them page by page; `Resource.list` turns the records into
resources.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from osimage import exceptions

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

DEFAULT_PAGE_SIZE: Final = 200
"""Page size a list asks for when the caller gives no ``limit``."""

SERVER_LIMIT_MAX: Final = 1000
"""Servers cap page sizes at this (v1's ``api_limit_max``); a shorter page ends a list
only when the page size asked for is at most this."""

Records = list[Mapping[str, Any]]


def _nothing() -> None:
    pass


@dataclass(frozen=True)
class Answer:
    """A page request sent and the start of its answer received: `read` reads the rest
    and returns the page's records (raising what a bad answer raises), `close` drops an
    answer that will not be read."""

    read: Callable[[], Records]
    close: Callable[[], None] = _nothing


def read_pages(
    start: Callable[[Mapping[str, str]], Answer],
    query: dict[str, str],
    *,
    paginated: bool,
    max_items: int | None,
    what: str,
) -> Generator[Records]:
    """Yield the records of each page, at most `max_items` in all; request ahead from page two.

    `start(query)` sends one page request and returns its `Answer`; the next page's
    marker is the last record's ``id``. ``limit`` in `query` is the page size (default
    `DEFAULT_PAGE_SIZE`); with `paginated` False only one page is read.

    Once the caller has asked for a second page, each page's successor is requested in
    a worker thread as soon as the page is read, before it is yielded, so the server
    works on it while the caller checks, builds and consumes this page. The worker only
    sends the request and waits for the answer to begin; the caller's thread reads and
    decodes it (a worker reading a big body chunk by chunk would wait for the GIL, held
    by the caller's thread, at every chunk). A list the caller reads within its first
    page sends only the requests it needs, and no request goes past a short page or
    `max_items`. An error in a page is raised when the caller asks for that page, after
    every page before it. A page whose last record has no usable ``id`` raises
    `InvalidResponse` (naming `what`) when the caller asks for the page after it.
    Closing the generator early waits for a request in flight and closes its answer
    unread (an error in it included: the caller never reached it), so no thread
    outlives it.
    """
    if paginated or max_items is not None:
        size = int(query.get("limit", DEFAULT_PAGE_SIZE))
        if max_items is not None:
            size = min(size, max_items)
        query["limit"] = str(size)
    if max_items == 0:
        return
    requested = int(query["limit"]) if "limit" in query else None

    def start_ahead(page_query: Mapping[str, str], running: threading.Event) -> Answer:
        running.set()
        return start(page_query)

    reader: ThreadPoolExecutor | None = None
    ahead: Future[Answer] | None = None
    try:
        yielded = 0
        page = 1
        records = start(query).read()
        while True:
            more = bool(paginated and records) and (
                requested is None or requested > SERVER_LIMIT_MAX or len(records) >= requested
            )
            if max_items is not None and yielded + len(records) >= max_items:
                more = False
            following: dict[str, str] | None = None
            if more:
                marker = records[-1].get("id")
                if isinstance(marker, str) and marker != query.get("marker"):
                    following = {**query, "marker": marker}
                if following is not None and page > 1:
                    if reader is None:
                        from concurrent.futures import ThreadPoolExecutor  # only when paging on

                        reader = ThreadPoolExecutor(1, thread_name_prefix="osimage-list")
                    running = threading.Event()
                    ahead = reader.submit(start_ahead, following, running)
                    # Let the worker hold the GIL until its request is on the wire,
                    # rather than wait a switch interval for this thread's CPU work.
                    running.wait()
            if max_items is not None:
                records = records[: max_items - yielded]
            yield records
            yielded += len(records)
            if not more:
                return
            if following is None:
                raise exceptions.InvalidResponse(
                    f"cannot page past {what} {records[-1].get('id')!r}"
                )
            query = following
            page += 1
            answer = start(query) if ahead is None else ahead.result()
            ahead = None
            records = answer.read()
    finally:
        if reader is not None:
            reader.shutdown(wait=True, cancel_futures=True)
        if ahead is not None and not ahead.cancelled() and ahead.exception() is None:
            ahead.result().close()
