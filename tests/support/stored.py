"""What a test server's store actually holds: files, Swift objects and segments, S3 objects
and multipart uploads. "Nothing is left" checks read the store in use, not the data dir."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx

from osimage.server.stores.swift import SEGMENTS_SUFFIX
from tests.support.backends import s3_client, swift_aio_env
from tests.support.server import Server


def store_url(server: Server) -> str:
    """The `--store` the server was started with (the data dir's file store if none)."""
    args = server.args
    for index, arg in enumerate(args[:-1]):
        if arg == "--store":
            return args[index + 1]
    return (server.data_dir / "images").resolve().as_uri()


def store_kind(server: Server) -> str:
    return urlsplit(store_url(server)).scheme


def stored_names(server: Server) -> list[str]:
    """Every name in the server's store: blobs, partial files, segments, pending uploads."""
    parts = urlsplit(store_url(server))
    if parts.scheme == "file":
        directory = Path(unquote(parts.path))
        return sorted(p.name for p in directory.iterdir()) if directory.exists() else []
    if parts.scheme == "swift":
        return _swift_names(parts.netloc)
    if parts.scheme == "s3":
        return _s3_names(parts.netloc)
    raise ValueError(f"unknown store {parts.scheme!r}")


def stored_for(server: Server, image_id: str) -> list[str]:
    """The names in the server's store that belong to `image_id` (partials, segments too)."""
    return [name for name in stored_names(server) if image_id in name]


def _swift_names(container: str) -> list[str]:
    env = swift_aio_env()
    auth = httpx.get(
        env["ST_AUTH"], headers={"x-auth-user": env["ST_USER"], "x-auth-key": env["ST_KEY"]}
    )
    names: list[str] = []
    with httpx.Client(headers={"x-auth-token": auth.headers["x-auth-token"]}) as client:
        for name in (container, container + SEGMENTS_SUFFIX):
            answer = client.get(
                f"{auth.headers['x-storage-url']}/{name}",
                params={"format": "json", "limit": "10000"},
            )
            if answer.status_code == 200:
                names += [f"{name}/{entry['name']}" for entry in answer.json()]
    return sorted(names)


def _s3_names(bucket: str) -> list[str]:
    client = s3_client(swift_aio_env())
    try:
        names = [
            f"upload:{upload['Key']}"
            for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        ]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            names += [entry["Key"] for entry in page.get("Contents", [])]
    except client.exceptions.NoSuchBucket:
        return []
    finally:
        client.close()
    return sorted(names)
