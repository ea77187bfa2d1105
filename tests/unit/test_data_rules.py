"""The data path's pure rules, per API: how v2 words the shared format and size-cap rules,
and why a failed transfer failed (its log line and error event)."""

from __future__ import annotations

from typing import Any

import pytest

from osimage.server import copies, sources
from osimage.server.db.catalog import ImageRow
from osimage.server.errors import BadRequest, Gone, TooLarge
from osimage.server.ingest import UPLOAD, failure_reason
from osimage.server.v2 import data
from tests.unit.test_rules import image as rules_image


def image(**changes: Any) -> ImageRow:
    """A queued image with no data yet (test_rules' record, its data fields cleared)."""
    return rules_image(**{"status": "queued", "size": None, "checksum": None, **changes})


def test_v2_names_the_missing_formats() -> None:
    data.require_formats(image())
    with pytest.raises(BadRequest, match=r"^Property container_format must be set prior"):
        data.require_formats(image(container_format=None))
    with pytest.raises(BadRequest, match=r"^Properties disk_format, container_format must"):
        data.require_formats(image(disk_format=None, container_format=None))


def test_v2_answers_the_size_cap_with_413() -> None:
    data.check_size_cap(None, 10)
    data.check_size_cap(10, 10)
    with pytest.raises(TooLarge, match=r"too large: 11 > 10 bytes"):
        data.check_size_cap(11, 10)


def test_the_apis_answer_an_image_gone_during_activation_in_their_own_way() -> None:
    assert data._gone(image()).status_code == Gone.status_code == 410
    assert UPLOAD.gone(image(deleted=True)).status_code == 412
    assert UPLOAD.gone(image(status="killed")).status_code == 409


@pytest.mark.parametrize(
    ("error", "copy_timeout", "reason"),
    [
        (BadRequest("too short"), None, "too short"),
        (sources.SourceError("no route"), 30.0, "no route"),
        (TimeoutError(), 30.0, "it took longer than copy_timeout (30 s)"),
        (copies.CopyTooSlow("slow"), 30.0, "slow (copy_min_rate)"),
        (KeyboardInterrupt(), None, "the upload was interrupted"),
    ],
)
def test_failure_reasons(error: BaseException, copy_timeout: float | None, reason: str) -> None:
    assert str(failure_reason(error, copy_timeout)) == reason


def test_an_upload_names_no_copy_setting() -> None:
    error = TimeoutError("read timed out")
    assert failure_reason(error) is error
