"""The minimum-rate arithmetic of upload bodies (`Pace`), without a server."""

from __future__ import annotations

import math

import pytest

from osimage.server.api.call import Pace
from osimage.server.errors import RequestTimeout


def test_a_window_short_of_its_bytes_fails_when_it_ends() -> None:
    pace = Pace(10, 2.0)  # 20 bytes per 2 s of waiting
    pace.waited(1.0, 15)
    assert pace.left() == 1.0
    with pytest.raises(RequestTimeout, match=r"less than 10 bytes per second over 2 seconds"):
        pace.waited(1.0, 0)


def test_bursts_between_pauses_pass_and_each_window_starts_afresh() -> None:
    pace = Pace(10, 2.0)
    for _ in range(4):
        pace.waited(1.5, 25)  # a pause, then a burst: enough for its window
        assert pace.left() == math.inf
    pace.waited(2.0, 0)  # that window had its bytes; the next starts with none
    assert pace.left() == 2.0
    with pytest.raises(RequestTimeout):
        pace.waited(2.0, 0)


def test_bytes_arriving_after_the_window_ended_do_not_save_it() -> None:
    pace = Pace(10, 2.0)
    pace.waited(1.0, 5)
    with pytest.raises(RequestTimeout, match="upload_min_rate"):
        pace.waited(1.5, 100)
