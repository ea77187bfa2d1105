"""`GET /healthcheck` and `GET /metrics` through real servers, in noauth and tokens mode."""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.api_client import Api, Response, meta, unique
from tests.support.server import Server, start_server

pytestmark = pytest.mark.e2e


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(resp: Response) -> Samples:
    """Every sample of a /metrics answer, keyed by name and sorted labels."""
    assert resp.status == 200, resp
    assert resp.header("content-type") or "".startswith("text/plain")
    found: Samples = {}
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


# -- health check -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("ops-tokens")
    srv = start_server(
        base,
        "--healthcheck-disable-file",
        str(base / "drain"),
        "--healthcheck-cache-seconds",
        "0",
        "--metrics-access",
        "admin",
        auth="tokens",
    )
    yield srv
    srv.close()


def test_healthcheck_answers_ok_before_authentication(tokens: Server) -> None:
    anonymous = Api(tokens.url)
    resp = anonymous.request("GET", "/healthcheck")
    assert (resp.status, resp.body) == (200, b"OK")
    assert resp.content_type.startswith("text/plain")
    head = anonymous.request("HEAD", "/healthcheck")
    assert (head.status, head.body) == (200, b"")
    assert anonymous.request("POST", "/healthcheck", body=b"").status == 405
    assert anonymous.list().status == 401  # the API itself still wants a token


def test_healthcheck_details_are_for_admins_only(tokens: Server) -> None:
    accept = {"Accept": "application/json"}
    detailed = Api(tokens.url, "admin-token").request("GET", "/healthcheck", accept).json()
    assert detailed["detailed"] is True
    checks = {reason["class"]: reason for reason in detailed["reasons"]}
    assert set(checks) == {"Database", "Store"}
    assert all(reason["reason"] == "OK" for reason in checks.values())
    for caller in (Api(tokens.url, "alice-token"), Api(tokens.url)):
        plain = caller.request("GET", "/healthcheck", accept)
        assert plain.status == 200
        assert plain.json() == {"detailed": False, "reasons": ["OK"]}


def test_disable_file_drains_the_node(tokens: Server) -> None:
    drain = tokens.data_dir.parent / "drain"
    api = Api(tokens.url)
    assert api.request("GET", "/healthcheck").status == 200
    drain.write_text("maintenance\n")
    try:
        resp = api.request("GET", "/healthcheck")
        assert (resp.status, resp.body) == (503, b"DISABLED BY FILE")
        # draining only tells the load balancer: requests still work
        assert Api(tokens.url, "alice-token").list().status == 200
    finally:
        drain.unlink()
    assert api.request("GET", "/healthcheck").status == 200


@pytest.mark.file_store
def test_an_unreachable_store_is_unhealthy(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "srv", "--healthcheck-cache-seconds", "0")
    try:
        api = Api(srv.url)
        assert api.request("GET", "/healthcheck").status == 200
        images = srv.data_dir / "images"
        assert images.is_dir()
        shutil.rmtree(images)
        resp = api.request("GET", "/healthcheck")
        assert resp.status == 503
        assert b"STORE UNREACHABLE" in resp.body
        detail = api.request("GET", "/healthcheck", {"Accept": "application/json"}).json()
        verdicts = {r["class"]: r["details"]["healthy"] for r in detail["reasons"]}
        assert verdicts == {"Database": True, "Store": False}
        # the same failure on an upload: 503, and counted
        failed = api.create(
            meta(name=unique("lost"), disk_format="raw", container_format="bare"), b"x"
        )
        assert failed.status == 503, failed
        found = samples(api.request("GET", "/metrics"))
        assert value(found, "osimage_store_errors_total", operation="put") == 1
        images.mkdir()
        assert api.request("GET", "/healthcheck").status == 200
    finally:
        srv.close()


# -- metrics -----------------------------------------------------------------------------


def test_metrics_count_requests_by_route_template_and_bytes(fresh_server: Server) -> None:
    api = Api(fresh_server.url)
    data = b"m" * 100_000
    image = api.upload(data, name=unique("metrics"))
    assert api.get(image["id"]).body == data
    assert api.head(image["id"]).status == 200
    assert api.get("0" * 36).status == 404
    assert api.request("GET", f"/v1/images/{image['id']}/members").status == 200
    found = samples(api.request("GET", "/metrics"))

    requests = "osimage_http_requests_total"
    item = {"api": "v1", "route": "/v1/images/{id}"}
    assert value(found, requests, **item, method="GET", status="200") == 1
    assert value(found, requests, **item, method="GET", status="404") == 1
    assert value(found, requests, **item, method="HEAD", status="200") == 1
    assert value(found, requests, api="v1", route="/v1/images", method="POST", status="201") == 1
    members = {"api": "v1", "route": "/v1/images/{id}/members", "method": "GET", "status": "200"}
    assert value(found, requests, **members) == 1
    routes = {dict(labels).get("route") for (name, labels) in found if name == requests}
    assert not any(image["id"] in route for route in routes if route), routes
    duration = "osimage_http_request_duration_seconds_count"
    assert value(found, duration, api="v1", route="/v1/images/{id}", method="GET") == 2

    assert value(found, "osimage_image_bytes_uploaded_total") == len(data)
    assert value(found, "osimage_image_bytes_downloaded_total") == len(data)
    assert value(found, "osimage_images", status="active") == 1
    assert value(found, "osimage_transfers_in_progress", kind="upload") == 0
    assert ("osimage_store_errors_total", (("operation", "put"),)) in found
    assert ("osimage_notifications_dropped_total", ()) in found


def test_metrics_access_admin(tokens: Server) -> None:
    assert Api(tokens.url).request("GET", "/metrics").status == 401
    assert Api(tokens.url, "alice-token").request("GET", "/metrics").status == 403
    found = samples(Api(tokens.url, "admin-token").request("GET", "/metrics"))
    assert value(found, "osimage_http_requests_total", api="none", route="/metrics",
                 method="GET", status="403") >= 1  # fmt: skip


def test_metrics_access_off(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "srv", "--metrics-access", "off")
    try:
        assert Api(srv.url).request("GET", "/metrics").status == 404
        assert Api(srv.url).request("GET", "/healthcheck").status == 200
    finally:
        srv.close()


def test_metrics_sum_all_workers_and_the_directory_goes_away(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "srv", "--workers", "2")
    try:
        api = Api(srv.url)
        for _ in range(30):
            assert api.list().status == 200
        match = re.search(r"metrics: 2 workers share (\S+)", srv.log())
        assert match, srv.log()
        directory = Path(match.group(1))
        assert list(directory.glob("*.db"))  # the workers write their samples there
        pids = set()
        for _ in range(6):  # whichever worker answers, the sum is the same
            found = samples(api.request("GET", "/metrics"))
            listed = {"api": "v1", "route": "/v1/images", "method": "GET", "status": "200"}
            assert value(found, "osimage_http_requests_total", **listed) == 30
        pids = {p.name.rsplit("_", 1)[-1] for p in directory.glob("counter_*.db")}
        assert len(pids) == 2, pids
    finally:
        srv.close()
    assert not directory.exists()


def test_uploads_in_flight_and_md5_match(fresh_server: Server) -> None:
    """A checksum mismatch (a failed upload) leaves no upload counted in flight."""
    api = Api(fresh_server.url)
    data = b"x" * 1000
    bad = api.create(
        meta(name=unique("bad"), disk_format="raw", container_format="bare", checksum="0" * 32),
        data,
    )
    assert bad.status == 400
    good = api.upload(data, name=unique("good"), checksum=hashlib.md5(data).hexdigest())
    assert good["status"] == "active"
    found = samples(api.request("GET", "/metrics"))
    assert value(found, "osimage_transfers_in_progress", kind="upload") == 0
    assert value(found, "osimage_images", status="killed") == 1
    assert value(found, "osimage_images", status="active") == 1
