"""A small fake Foreman (aiohttp, child process): the host API gearshift uses, with state.

Covers exactly Foreman's API v2 as gearshift calls it: HTTP basic auth (a user's password
or personal access token; 401 ``{"error": {"message": "Unable to authenticate user U"}}``
otherwise), ``GET /api/status``, ``GET /api/hosts`` (paged envelope), ``GET /api/hosts/:id``
and ``PUT /api/hosts/:id`` with ``{"host": {"build": true|false, "comment": "..."}}``, where
``:id`` is the numeric id or the host's name, as in Foreman. An unknown host is 404
``{"error": {"message": "Resource host not found by id 'X'"}}``; a non-boolean ``build`` is
422 with Foreman's ``{"error": {"id": ID, "errors": {...}, "full_messages": [...]}}``.
Every PUT is also recorded in ``GET /__fake__/builds`` so tests can see what was asked.

    python -m simulators.foreman --port PORT --user admin --password-env FOREMAN_PASSWORD \\
        --host node-1.example --host node-2.example
"""

from __future__ import annotations

import argparse
import base64
import os
import time
from typing import Any

from aiohttp import web


def make_app(*, user: str, password: str, hosts: list[str]) -> web.Application:
    table: dict[int, dict[str, Any]] = {}
    for number, name in enumerate(hosts, start=1):
        table[number] = {"id": number, "name": name, "build": False, "managed": True,
                         "comment": None, "updated_at": None}
    builds: list[dict[str, Any]] = []

    def find(key: str) -> dict[str, Any] | None:
        if key.isdigit():
            return table.get(int(key))
        return next((h for h in table.values() if h["name"] == key), None)

    @web.middleware
    async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        ok = False
        if header.startswith("Basic "):
            try:
                given = base64.b64decode(header[6:]).decode()
            except ValueError:
                given = ""
            ok = given == f"{user}:{password}"
        if not ok and not request.path.startswith("/__fake__"):
            name = given.split(":", 1)[0] if header.startswith("Basic ") and given else ""
            return web.json_response({"error": {"message": f"Unable to authenticate user "
                                                           f"{name}"}}, status=401)
        return await handler(request)

    routes = web.RouteTableDef()

    @routes.get("/api/status")
    async def status(request: web.Request) -> web.Response:
        return web.json_response({"result": "ok", "status": 200, "version": "3.9.0",
                                  "api_version": 2})

    @routes.get("/api/hosts")
    async def list_hosts(request: web.Request) -> web.Response:
        results = list(table.values())
        return web.json_response({"total": len(results), "subtotal": len(results), "page": 1,
                                  "per_page": 20, "search": None, "sort": {"by": None,
                                                                           "order": None},
                                  "results": results})

    @routes.get("/api/hosts/{id}")
    async def get_host(request: web.Request) -> web.Response:
        host = find(request.match_info["id"])
        if host is None:
            return web.json_response({"error": {"message": f"Resource host not found by id "
                                                           f"'{request.match_info['id']}'"}},
                                     status=404)
        return web.json_response(host)

    @routes.put("/api/hosts/{id}")
    async def put_host(request: web.Request) -> web.Response:
        host = find(request.match_info["id"])
        if host is None:
            return web.json_response({"error": {"message": f"Resource host not found by id "
                                                           f"'{request.match_info['id']}'"}},
                                     status=404)
        body = await request.json()
        changes = body.get("host", {}) if isinstance(body, dict) else {}
        if "build" in changes and not isinstance(changes["build"], bool):
            return web.json_response({"error": {"id": host["id"], "errors": {
                "build": ["is not a boolean"]}, "full_messages": ["Build is not a boolean"]}},
                status=422)
        for key in ("build", "comment"):
            if key in changes:
                host[key] = changes[key]
        host["updated_at"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        builds.append({"host": host["name"], **changes})
        return web.json_response(host)

    @routes.get("/__fake__/builds")
    async def recorded(request: web.Request) -> web.Response:
        return web.json_response(builds)

    app = web.Application(middlewares=[auth])
    app.add_routes(routes)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m simulators.foreman")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", default="admin")
    parser.add_argument("--password-env", default="FOREMAN_PASSWORD")
    parser.add_argument("--host", action="append", default=[])
    args = parser.parse_args()
    app = make_app(user=args.user, password=os.environ[args.password_env], hosts=args.host)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
