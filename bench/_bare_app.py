"""The load baseline: bare Starlette on uvicorn answering a constant, run like `osimage serve`.

Same uvicorn settings as osimage's runner (one process, no access log, no server
header); the routes have the shapes the benchmark requests, and answer fixed bytes.

    .venv/bin/python -m bench._bare_app PORT [h11|httptools]

The HTTP implementation is h11 unless named; `bench.server_rate` names the one `osimage
serve` runs with (its `--http`), so both sides parse and write HTTP the same way
(uvicorn's "auto" would pick httptools whenever it is installed).
"""

from __future__ import annotations

import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

BODY = b'{"images": []}'


async def image(request: Request) -> Response:
    return Response(b"", headers={"x-constant": "1"}, media_type="application/octet-stream")


async def detail(request: Request) -> Response:
    return Response(BODY, media_type="application/json")


async def versions(request: Request) -> Response:
    return Response(b'{"versions": []}', media_type="application/json")


app = Starlette(
    routes=[
        Route("/versions", versions),
        Route("/v1/images/detail", detail),
        Route("/v1/images/{image_id}", image, methods=["GET", "HEAD"]),
    ]
)


def serve(asgi: Starlette, port: int, implementation: str) -> None:
    """Run `asgi` with osimage's uvicorn settings (`bench._floor_app` runs this way too)."""
    uvicorn.run(
        asgi,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        log_level="warning",
        lifespan="on",
        server_header=False,
        http=implementation,
    )


if __name__ == "__main__":
    serve(app, int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "h11")
