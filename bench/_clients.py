"""The three clients compared against one osimage server, each counting its requests.

osimage's SDK (an `Image` over a keystoneauth1 Adapter, and ``osimage.connect()``'s
proxy), openstacksdk's v1 image proxy, and python-glanceclient v1. Each sits on its own
``requests.Session`` whose response hook counts round trips.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import requests


@dataclass
class Counter:
    """Round trips a requests.Session made since the last `reset`."""

    requests: int = 0
    paths: list[str] = field(default_factory=list)

    def hook(self, response: Any, *args: Any, **kwargs: Any) -> None:
        self.requests += 1
        self.paths.append(f"{response.request.method} {response.request.path_url.split('?')[0]}")

    def reset(self) -> None:
        self.requests = 0
        self.paths.clear()


def counted_session(counter: Counter) -> requests.Session:
    http = requests.Session()
    http.hooks["response"].append(counter.hook)
    return http


@dataclass
class Clients:
    osimage_adapter: Any  # keystoneauth1 Adapter bound to .../v1, for osimage's Image
    osimage_conn: Any  # osimage.connect(): conn.image is osimage's proxy
    openstack_conn: Any  # openstack.connection.Connection with image v1
    glance: Any  # glanceclient.v1.client.Client
    counters: dict[str, Counter]


def make_clients(endpoint: str) -> Clients:
    """Clients of the noauth server whose ``/v1`` endpoint is `endpoint`."""
    from glanceclient.v1 import client as glance_client
    from keystoneauth1 import adapter, noauth, session
    from openstack import connection

    import osimage

    counters = {name: Counter() for name in ("osimage", "openstacksdk", "glanceclient")}
    ours = adapter.Adapter(
        session.Session(session=counted_session(counters["osimage"])), endpoint_override=endpoint
    )
    conn = osimage.connect(
        auth_type="none",
        image_endpoint_override=endpoint,
        session=session.Session(session=counted_session(counters["osimage"])),
    )
    theirs = connection.Connection(
        session=session.Session(
            auth=noauth.NoAuth(), session=counted_session(counters["openstacksdk"])
        ),
        image_endpoint_override=endpoint,
        image_api_version="1",
    )
    glance = glance_client.Client(endpoint=endpoint.removesuffix("/v1"))
    glance.http_client.session.hooks["response"].append(counters["glanceclient"].hook)
    return Clients(ours, conn, theirs, glance, counters)
