"""A webhook alert sink for `make test-deploy`, run in a container on the compose network.

It keeps every POST it is sent (body and `Idempotency-Key`) and serves them back on
`GET /alerts`, for the test to count by alert key. Standard library and aiohttp only:
it runs on the rtt image's Python.
"""

from __future__ import annotations

import json
import time

from aiohttp import web

received: list[dict[str, object]] = []


async def take(request: web.Request) -> web.Response:
    received.append(
        {
            "idempotency_key": request.headers.get("Idempotency-Key"),
            "at": time.time(),
            "body": await request.json(),
        }
    )
    return web.Response(status=204)


async def serve_back(_: web.Request) -> web.Response:
    return web.Response(text=json.dumps(received), content_type="application/json")


async def healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")


app = web.Application()
app.router.add_post("/alerts", take)
app.router.add_get("/alerts", serve_back)
app.router.add_get("/healthz", healthz)

if __name__ == "__main__":
    # SIGTERM ends run_app cleanly: exit 0, as `docker compose down` expects.
    web.run_app(app, host="0.0.0.0", port=8090, access_log=None, print=None)
