"""Real clients that log in to Keystone themselves, against a keystone-mode server."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from glanceclient import exc as glance_exc
from glanceclient.v1 import client as glance_v1

from osimage import exceptions
from osimage.connection import Connection
from tests.e2e.api_client import unique
from tests.keystone.conftest import Keystone, start_keystone_server
from tests.support.server import Server

pytestmark = [pytest.mark.keystone, pytest.mark.e2e]
DATA = b"logged in through keystone" * 100


@pytest.fixture(scope="module")
def server(keystone: Keystone, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_keystone_server(keystone, tmp_path_factory.mktemp("keystone-clients"))
    yield srv
    srv.stop()


def sdk(keystone: Keystone, server: Server, who: str) -> Connection:
    """Our SDK, password auth at Keystone; the image endpoint is this test's server."""
    username, password, project = keystone.users[who]
    return Connection(
        auth_url=keystone.auth_url,
        username=username,
        password=password,
        project_name=project,
        user_domain_name=keystone.domain,
        project_domain_name=keystone.domain,
        image_endpoint_override=server.endpoint,
    )


def test_sdk_sessions_get_their_identity_from_keystone(keystone, server):
    alice_project = keystone.login("alice").project_id
    with sdk(keystone, server, "alice") as alice, sdk(keystone, server, "bob") as bob:
        image = alice.image.create_image(
            unique("sdk"), data=DATA, disk_format="raw", container_format="bare"
        )
        assert image.owner == alice_project
        assert image.id is not None
        assert alice.image.get_image(image.id).size == len(DATA)
        with pytest.raises(exceptions.NotFoundException):
            bob.image.get_image(image.id)
        assert image.id not in [i.id for i in bob.image.images()]
        with pytest.raises(exceptions.NotFoundException):
            bob.image.delete_image(image.id, ignore_missing=False)
        assert alice.image.get_image(image.id).status == "active"


def glance(server: Server, token: str) -> Any:
    return glance_v1.Client(endpoint=server.url, token=token)


def test_glanceclient_with_keystone_tokens(keystone, server):
    # glanceclient percent-encodes the token it sends; the server must undo that
    alice, bob = keystone.login("alice"), keystone.login("bob")
    image = glance(server, alice.token).images.create(
        name=unique("gc"), disk_format="raw", container_format="bare", data=io.BytesIO(DATA)
    )
    assert image.owner == alice.project_id
    assert b"".join(glance(server, alice.token).images.data(image.id)) == DATA
    with pytest.raises(glance_exc.HTTPNotFound):
        glance(server, bob.token).images.get(image.id)
    with pytest.raises(glance_exc.HTTPUnauthorized):
        glance(server, "gAAAAABnot-a-token").images.get(image.id)
