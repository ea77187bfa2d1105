"""Lists under hostile queries (#11 item 3): a cap on filters per list, statement caches
that do not grow with the shapes clients send, and no SQL whose depth a client sets.

Real `osimage serve` processes; the long-list tests run on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import http.client
import itertools
import json
import random
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import psutil
import pytest

from tests.e2e.api_client import Api, meta, props
from tests.support.backends import Backend
from tests.support.server import Server, start_server

LIST_FILTERS_MAX = 50  # the default
BACKENDS = [Backend("sqlite"), Backend("postgres")]


def _server(base: Path, *args: str, backend: Backend | None = None) -> Server:
    return start_server(base, *args, backend=backend)


def _close(srv: Server) -> None:
    log = srv.log()
    srv.close()
    assert "Traceback" not in log, log[-3000:]


@pytest.fixture(scope="module", params=BACKENDS, ids=lambda b: b.database)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    srv = _server(tmp_path_factory.mktemp("lists"), backend=request.param)
    yield srv
    _close(srv)


def _properties(count: int) -> dict[str, str]:
    return {f"k{index:04d}": f"v{index}" for index in range(count)}


def _filters(properties: dict[str, str]) -> str:
    return urlencode({f"property-{key}": value for key, value in properties.items()})


def _ids(api: Api, query: str) -> list[str]:
    resp = api.request("GET", f"/v1/images/detail?{query}")
    assert resp.status == 200, resp
    return [entry["id"] for entry in resp.images]


def test_filters_beyond_the_cap_are_a_400_naming_it(server: Server) -> None:
    api = Api(server.url)
    over = _filters(_properties(LIST_FILTERS_MAX + 1))
    resp = api.request("GET", f"/v1/images/detail?{over}")
    assert resp.status == 400, resp
    assert "list_filters_max" in resp.text
    mixed = _filters(_properties(LIST_FILTERS_MAX - 1)) + "&name=x&size_min=1"
    resp = api.request("GET", f"/v1/images?{mixed}")
    assert resp.status == 400, resp
    assert "list_filters_max" in resp.text
    paging = _filters(_properties(LIST_FILTERS_MAX)) + "&limit=5&sort_key=name&sort_dir=asc"
    assert api.request("GET", f"/v1/images?{paging}").status == 200  # paging is no filter


def test_a_filter_list_at_the_cap_matches_exactly(server: Server) -> None:
    api = Api(server.url)
    wanted = _properties(LIST_FILTERS_MAX)
    full = api.create({**meta(name="full", is_public=True), **props(**wanted)})
    assert full.status == 201, full
    fewer = dict(itertools.islice(wanted.items(), LIST_FILTERS_MAX - 1))
    partial = api.create({**meta(name="partial", is_public=True), **props(**fewer)})
    assert partial.status == 201, partial
    assert _ids(api, _filters(wanted)) == [full.image["id"]]
    found = _ids(api, _filters(fewer))
    assert sorted(found) == sorted([full.image["id"], partial.image["id"]])
    wrong = {**wanted, "k0007": "other"}
    assert _ids(api, _filters(wrong)) == []
    with_fields = dict(itertools.islice(wanted.items(), LIST_FILTERS_MAX - 2))
    query = _filters(with_fields) + "&name=full&min_ram=0"
    assert _ids(api, query) == [full.image["id"]]


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.database)
def test_a_filter_list_past_sqlite_expression_depth_works(tmp_path: Path, backend: Backend) -> None:
    """With the cap raised to 1500, a list of 1500 property filters still runs: the
    filters are one condition, not 1500 nested ones (SQLite's default depth limit: 1000)."""
    count = 1500
    srv = _server(
        tmp_path, "--list-filters-max", str(count), "--query-params-max", str(count + 10),
        "--property-quota", str(count), backend=backend,
    )  # fmt: skip
    try:
        api = Api(srv.url)
        wanted = _properties(count)
        image = api.create(meta(name="many", is_public=True))
        assert image.status == 201, image
        # the properties go in by PUT, a few hundred headers at a time (header block limits)
        items = list(wanted.items())
        for start in range(0, count, 250):
            chunk = dict(items[start : start + 250])
            resp = api.update(
                image.image["id"], {**props(**chunk), "x-glance-registry-purge-props": "false"}
            )
            assert resp.status == 200, resp
        assert _ids(api, _filters(wanted)) == [image.image["id"]]
        assert _ids(api, _filters({**wanted, "k1499": "no"})) == []
    finally:
        _close(srv)


# -- memory under distinct query shapes -----------------------------------------------------

_EXACT = ("name", "status", "container_format", "disk_format", "min_ram", "min_disk", "protected")
_SORT_KEYS = (
    "name", "status", "container_format", "disk_format", "size", "id", "created_at", "updated_at",
)  # fmt: skip
_VALUES = {"name": "n", "status": "active", "container_format": "bare", "disk_format": "raw",
           "min_ram": "0", "min_disk": "0", "protected": "False"}  # fmt: skip


def _shapes(seed: int) -> Iterator[tuple[str, str]]:
    """Distinct (path, query) shapes: every combination of the filters, sort orders and
    list kinds, with 1 to 40 property filters in a shuffled order (each a new statement
    shape, before osimage made property filters one condition)."""
    rng = random.Random(seed)
    combos = list(
        itertools.product(
            range(1, 2 ** len(_EXACT)), _SORT_KEYS, ("asc", "desc"), (False, True), (False, True)
        )
    )
    rng.shuffle(combos)
    for mask, sort_key, sort_dir, sized, detail in combos:
        params = [(name, _VALUES[name]) for bit, name in enumerate(_EXACT) if mask >> bit & 1]
        keys = [f"p{index}" for index in range(rng.randint(1, 40))]
        rng.shuffle(keys)
        params += [(f"property-{key}", "v") for key in keys]
        if sized:
            params += [("size_min", "0"), ("size_max", str(2**40))]
        params += [("sort_key", sort_key), ("sort_dir", sort_dir)]
        yield ("/v1/images/detail" if detail else "/v1/images"), urlencode(params)


def _drive(port: int, shapes: Iterator[tuple[str, str]], count: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        for path, query in itertools.islice(shapes, count):
            conn.request("GET", f"{path}?{query}")
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200, body[:300]
            assert "images" in json.loads(body)
    finally:
        conn.close()


def test_memory_does_not_grow_with_distinct_query_shapes(tmp_path: Path) -> None:
    """Thousands of distinct filter shapes: after the statement caches fill (a bounded
    number of shapes: 256 built, 500 compiled), more new shapes do not grow the server's
    memory. On the backend OSIMAGE_TEST_BACKEND selects (a PostgreSQL run takes longer)."""
    srv = _server(tmp_path)
    try:
        assert srv.proc is not None
        process = psutil.Process(srv.proc.pid)
        api = Api(srv.url)
        for index in range(20):
            api.create({**meta(name=f"n{index}", is_public=True), **props(p1="v", p2="v")})
        shapes = _shapes(seed=11)
        _drive(srv.port, shapes, 800)  # more than every bounded cache holds
        settled = process.memory_info().rss
        samples = []
        for _ in range(4):
            _drive(srv.port, shapes, 300)  # 1200 shapes more, none seen before
            samples.append(process.memory_info().rss)
    finally:
        _close(srv)
    growth = max(samples) - settled
    mib = 1024 * 1024
    print(
        f"RSS after 800 shapes {settled / mib:.1f} MiB; "
        f"over 1200 more: {', '.join(f'{s / mib:.1f}' for s in samples)} MiB"
    )
    assert growth < 16 * mib, f"RSS grew {growth / mib:.1f} MiB over 1200 new query shapes"


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.database)
def test_memory_does_not_grow_with_the_number_of_filters(tmp_path: Path, backend: Backend) -> None:
    """With the filter cap raised to 500, 300 lists of 100 to 399 property filters (each
    count a new statement shape, before osimage made property filters one condition;
    that grew the server by ~700 MiB) leave the server's memory where it was."""
    srv = _server(
        tmp_path, "--list-filters-max", "500", "--query-params-max", "600", backend=backend
    )
    try:
        assert srv.proc is not None
        process = psutil.Process(srv.proc.pid)
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)

        def lists(counts: range) -> None:
            for count in counts:
                path = "/v1/images/detail" if count % 2 else "/v1/images"
                conn.request("GET", f"{path}?{_filters(_properties(count))}")
                resp = conn.getresponse()
                assert resp.status == 200, resp.read()[:300]
                resp.read()

        try:
            lists(range(1, 100))
            settled = process.memory_info().rss
            samples = []
            for start in range(100, 400, 50):
                lists(range(start, start + 50))
                samples.append(process.memory_info().rss)
        finally:
            conn.close()
        mib = 1024 * 1024
        print(
            f"RSS after 99 lists {settled / mib:.1f} MiB; over 300 longer ones: "
            f"{', '.join(f'{s / mib:.1f}' for s in samples)} MiB"
        )
        growth = max(samples) - settled
        assert growth < 16 * mib, f"RSS grew {growth / mib:.1f} MiB over 300 filter counts"
    finally:
        _close(srv)
