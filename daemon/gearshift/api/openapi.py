"""The OpenAPI 3.1 document of the HTTP API, served at ``/v1/openapi.json``.

Written next to the handlers it describes (paths only: every component schema is
generated from the models that serialise the bodies, gearshift.api_models and
api/models_status.py), because it is a contract for the people
and tools that call us (scripts, the PaaS broker's capacity requests, the ``gearshift``
CLI); it is generated per request only in that pool names come from the policies in
force, so a client (or schemathesis) knows which names exist. It is kept true by the
tests: schemathesis runs every operation against a live daemon and checks status codes,
content types and bodies against it, and a test checks that every route the server
registers is documented here and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gearshift import __version__
from gearshift.api.models_status import api_schemas
from gearshift.observe.requests import CapacityRequestBody
from gearshift.observe.unplaced import UnplacedGearsBody

EVENTS_DEFAULT = 200
EVENTS_MAX = 500

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


SCHEMAS: dict[str, Any] = api_schemas(ref_prefix="#/components/schemas/")


def _capacity_request(pools: Sequence[str]) -> dict[str, Any]:
    schema = CapacityRequestBody.model_json_schema()
    if pools:
        schema["properties"]["pool"]["enum"] = list(pools)
    return schema


def _unplaced_gears(pools: Sequence[str]) -> dict[str, Any]:
    schema = UnplacedGearsBody.model_json_schema()
    if pools:
        schema["properties"]["pool"]["enum"] = list(pools)
    return schema


def openapi_document(*, pools: Sequence[str], max_body: int) -> dict[str, Any]:
    """The document, with the pools in force as the names the API accepts."""
    pool_param: dict[str, Any] = {"type": "string"}
    if pools:
        pool_param["enum"] = list(pools)
    secured: list[dict[str, list[str]]] = [{"bearer": []}]
    auth_errors = {
        "401": _error("no bearer token given"),
        "403": _error("the token is wrong, or the daemon has no token configured"),
        "409": _error("this instance is a follower: ask the leader (see /v1/status)"),
    }
    pool_op = {
        "tags": ["operator"], "security": secured,
        "parameters": [{"name": "name", "in": "path", "required": True, "schema": pool_param}],
        "responses": {"200": _json(_ref("PoolPaused"), "done (idempotent); journaled, so a "
                                                        "pause outlives a restart"),
                      **auth_errors, "404": _error("no such pool"),
                      "503": _error("the journal cannot record it (store down or locked)")},
    }
    text = {"description": "", "content": {"text/plain": {"schema": {"type": "string"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "gearshift", "version": __version__,
                 "description": "The gearshift daemon's HTTP API (127.0.0.1:9310 by default). "
                                "Mutating calls need `Authorization: Bearer TOKEN` with the "
                                "token from `http.token_file`. Request bodies larger than "
                                f"{max_body} bytes are refused with 413."},
        "paths": {
            "/": {"get": {
                "summary": "status page", "tags": ["read"],
                "responses": {"200": {"description": "HTML page polling /v1/status",
                                      "content": {"text/html": {"schema": {"type": "string"}}}}},
            }},
            "/healthz": {"get": {
                "summary": "is the reconcile loop alive", "tags": ["read"],
                "responses": {"200": _json(_ref("Health"), "alive"),
                              "503": _json(_ref("Health"), "the loop has not beaten lately")},
            }},
            "/readyz": {"get": {
                "summary": "are the facts fresh and has a reconcile succeeded", "tags": ["read"],
                "responses": {"200": _json(_ref("Ready"), "ready"),
                              "503": _json(_ref("Ready"), "not ready")},
            }},
            "/metrics": {"get": {
                "summary": "Prometheus metrics (text exposition 0.0.4)", "tags": ["read"],
                "responses": {"200": {**text, "description": "gearshift_* metrics"}},
            }},
            "/v1/openapi.json": {"get": {
                "summary": "this document", "tags": ["read"],
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
            }},
            "/v1/status": {"get": {
                "summary": "fleet status by pool and provider", "tags": ["read"],
                "responses": {"200": _json(_ref("Status"), "status")},
            }},
            "/v1/plan": {"get": {
                "summary": "what the planner would do now (dry run, changes nothing)",
                "tags": ["read"],
                "responses": {"200": _json(_ref("Plan"), "every action with its reason and "
                                                         "the placements considered"),
                              "503": _error("the journal cannot be read (store down or "
                                            "locked)")},
            }},
            "/v1/events": {"get": {
                "summary": "recent actions, newest first", "tags": ["read"],
                "parameters": [{"name": "limit", "in": "query", "required": False,
                                "schema": {"type": "integer", "minimum": 1,
                                           "maximum": EVENTS_MAX, "default": EVENTS_DEFAULT}}],
                "responses": {"200": _json(_ref("Events"), "events"),
                              "400": _error("bad limit")},
            }},
            "/v1/pools/{name}/pause": {"post": {
                **pool_op, "summary": "pause a pool: no actions for it until resumed"}},
            "/v1/pools/{name}/resume": {"post": {
                **pool_op, "summary": "resume a paused pool"}},
            "/v1/capacity-requests": {"post": {
                "summary": "hold room for gears about to arrive", "tags": ["operator"],
                "security": secured,
                "requestBody": {"required": True, "content": {
                    JSON: {"schema": _capacity_request(pools)}}},
                "responses": {
                    "201": _json(_ref("CapacityRequestCreated"), "held until expires_at"),
                    "400": _error("the body is not a JSON object (or nests arrays and "
                                  "objects more than 32 deep)"), **auth_errors,
                    "408": _error("the body did not arrive within http.read_timeout"),
                    "413": _error(f"the body is larger than {max_body} bytes"),
                    "422": _error("a field is missing or invalid"),
                },
            }},
            "/v1/unplaced-gears": {"post": {
                "summary": "report gears the PaaS broker could not place (a broker-side hook)",
                "tags": ["operator"], "security": secured,
                "requestBody": {"required": True, "content": {
                    JSON: {"schema": _unplaced_gears(pools)}}},
                "responses": {
                    "200": _json(_ref("UnplacedGearsAccepted"),
                                 "counted as demand until expires_at unless renewed"),
                    "400": _error("the body is not a JSON object (or nests arrays and "
                                  "objects more than 32 deep)"), **auth_errors,
                    "408": _error("the body did not arrive within http.read_timeout"),
                    "413": _error(f"the body is larger than {max_body} bytes"),
                    "422": _error("a field is missing or invalid"),
                },
            }},
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
