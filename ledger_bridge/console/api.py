"""The console's REST API: every action of the pages, as JSON, described by `/openapi.json`.

Strategy: each route is declared once in `ROUTES` with its OpenAPI description; `add_routes` wires the
handlers and `openapi()` builds the document from the same table, so the document cannot list a route
that does not exist or miss one that does. Authentication: `POST /api/session` with a keystore and its
passphrase returns a bearer token (a browser gets the same session as a cookie from the sign-in page).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .. import operations as ops
from ..csv_import import parse_bytes32, parse_device_id
from ..errors import KeystoreError
from ..keystore import signer_from_blob
from ..model import DeviceRegistration
from .context import SERVICE, SESSIONS, session_of
from .service import parse_bundle, parse_state
from .sessions import Session

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# ---- schemas ----
ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
TX = {
    "type": "object",
    "required": ["transaction_hash", "block_number", "gas_used"],
    "properties": {
        "transaction_hash": {"type": "string"},
        "block_number": {"type": "integer"},
        "gas_used": {"type": "integer"},
    },
}
NULLABLE_STR = {"type": ["string", "null"]}
DEVICE_ROW = {
    "type": "object",
    "required": ["device_id", "state", "epoch"],
    "properties": {
        "device_id": {"type": "string"},
        "state": {"type": "string"},
        "epoch": {"type": "integer"},
        "owner": NULLABLE_STR,
        "manufacturer": NULLABLE_STR,
        "policy": NULLABLE_STR,
        "block": {"type": "integer"},
    },
}
OBJECT = {"type": "object"}
JOB = {
    "type": "object",
    "required": ["id", "kind", "step", "done", "total", "finished", "summary", "errors"],
    "properties": {
        "id": {"type": "string"},
        "kind": {"type": "string"},
        "step": {"type": "string"},
        "done": {"type": "integer"},
        "total": {"type": "integer"},
        "finished": {"type": "boolean"},
        "summary": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["line", "device_id", "reason"],
                "properties": {
                    "line": {"type": "integer"},
                    "device_id": {"type": "string"},
                    "reason": {"type": "string"},
                },
            },
        },
    },
}
DEVICE_ID = {
    "name": "device_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "16 hex digits",
}


@dataclass(frozen=True, kw_only=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    signed_in: bool = True
    params: list[dict[str, Any]] = field(default_factory=list)
    body: dict[str, Any] | None = None
    response: dict[str, Any] = field(default_factory=lambda: OBJECT)


def _require(request: web.Request) -> Session:
    session = session_of(request)
    if session is None:
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": "sign in first: POST /api/session"}), content_type="application/json"
        )
    return session


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise ValueError("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return body


def _str(body: dict[str, Any], name: str, *, required: bool = True) -> str:
    value = body.get(name, "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise ValueError(f"{name} is required (a string)")
    return value


def _list(body: dict[str, Any], name: str) -> list[str]:
    value = body.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name} must be a list of strings")
    return value


async def _tx(request: web.Request, outcome: Any) -> web.Response:
    """A transaction's outcome, once the index has seen it (so the next read shows the change)."""
    await request.app[SERVICE].sync()
    return web.json_response(ops.jsonable(outcome))


def _device(request: web.Request) -> bytes:
    return parse_device_id(request.match_info["device_id"])


def _actor(request: web.Request, session: Session) -> Any:
    return request.app[SERVICE].ledger.actor(session.signer)


# ---- handlers ----
async def sign_in(request: web.Request) -> web.Response:
    body = await _json(request)
    keystore = body.get("keystore")
    passphrase = _str(body, "passphrase")
    if not isinstance(keystore, dict):
        raise ValueError("keystore must be the keystore file's JSON object")
    session = await open_session(request, keystore, passphrase)
    return web.json_response(_session_view(request, session, with_tokens=True))


async def open_session(request: web.Request, keystore: dict[str, Any], passphrase: str) -> Session:
    try:
        signer = await asyncio.to_thread(signer_from_blob, keystore, passphrase, name="uploaded")
    except KeystoreError as exc:
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": str(exc)}), content_type="application/json"
        ) from None
    roles = await request.app[SERVICE].roles_of(signer.address)
    return request.app[SESSIONS].open(signer, roles)


def _session_view(request: web.Request, session: Session, *, with_tokens: bool = False) -> dict[str, Any]:
    view: dict[str, Any] = {
        "address": session.address,
        "label": session.signer.label,
        "roles": sorted(session.roles),
        "idle_timeout_s": request.app[SESSIONS].ttl_s,
    }
    if with_tokens:
        view.update(token=session.token, csrf=session.csrf)
    return view


async def who_am_i(request: web.Request) -> web.Response:
    return web.json_response(_session_view(request, _require(request)))


async def sign_out(request: web.Request) -> web.Response:
    session = _require(request)
    request.app[SESSIONS].close(session.token)
    return web.json_response({"signed_out": True})


async def channel(request: web.Request) -> web.Response:
    _require(request)
    return web.json_response(request.app[SERVICE].channel())


async def dashboard(request: web.Request) -> web.Response:
    _require(request)
    return web.json_response(ops.jsonable(request.app[SERVICE].dashboard()))


def list_filters(query: Any) -> dict[str, Any]:
    gateway = query.get("gateway") or None
    try:
        offset, limit = int(query.get("offset", 0)), int(query.get("limit", 50))
    except ValueError:
        raise ValueError("offset and limit are integers") from None
    return {
        "state": parse_state(query.get("state")),
        "owner": query.get("owner") or None,
        "gateway": None if gateway is None else ops.name_id(gateway, what="gateway"),
        "prefix": query.get("prefix", ""),
        "offset": offset,
        "limit": limit,
    }


async def devices(request: web.Request) -> web.Response:
    _require(request)
    return web.json_response(request.app[SERVICE].devices(**list_filters(request.query)))


async def device(request: web.Request) -> web.Response:
    _require(request)
    row = request.app[SERVICE].device_summary(_device(request))
    if row is None:
        raise web.HTTPNotFound(text=json.dumps({"error": "no such device"}), content_type="application/json")
    return web.json_response(row)


async def device_history(request: web.Request) -> web.Response:
    _require(request)
    dev = _device(request)
    if request.app[SERVICE].device_summary(dev) is None:
        raise web.HTTPNotFound(text=json.dumps({"error": "no such device"}), content_type="application/json")
    return web.json_response(ops.jsonable(await request.app[SERVICE].device_detail(dev)))


async def register_device(request: web.Request) -> web.Response:
    session = _require(request)
    body = await _json(request)
    return await _tx(request, await _actor(request, session).register_device(registration_from(body)))


def registration_from(body: Any) -> DeviceRegistration:
    dev = parse_device_id(_str(body, "device_id"))
    claim_code = body.get("claim_code") or ""
    if claim_code:
        from device_agent.core.identity import claim_hash

        ch = claim_hash(dev, str(claim_code).encode())
    else:
        ch = parse_bytes32(_str(body, "claim_hash"), name="claim_hash")
    return DeviceRegistration(
        device_id=dev,
        model=parse_bytes32(_str(body, "model"), name="model", allow_text=True),
        firmware_hash=parse_bytes32(_str(body, "firmware_hash"), name="firmware_hash"),
        characteristics=parse_bytes32(_str(body, "characteristics"), name="characteristics"),
        claim_hash=ch,
    )


async def device_action(request: web.Request) -> web.Response:
    session = _require(request)
    action = request.match_info["action"]
    if action not in ops.ACTIONS_BY_NAME:
        raise web.HTTPNotFound(
            text=json.dumps({"error": f"no action {action}"}), content_type="application/json"
        )
    body = await _json(request) if request.can_read_body else {}
    params = {k: v for k, v in body.items() if isinstance(v, str)}
    return await _tx(
        request, await ops.run_action(_actor(request, session), action, _device(request), params)
    )


async def recover(request: web.Request) -> web.Response:
    session = _require(request)
    outcomes = await ops.recover_after_clone(
        request.app[SERVICE].ledger, _actor(request, session), _device(request)
    )
    await request.app[SERVICE].sync()
    return web.json_response({"transactions": ops.jsonable(outcomes)})


async def authorize(request: web.Request) -> web.Response:
    session = _require(request)
    body = await _json(request)
    bundle_obj = body.get("bundle")
    if not isinstance(bundle_obj, dict):
        raise ValueError("bundle must be the device's owner bundle (<id>.owner.json) as a JSON object")
    bundle = parse_bundle(json.dumps(bundle_obj).encode())
    if bundle.device_id != _device(request):
        raise ValueError("the bundle is another device's")
    svc = request.app[SERVICE]
    return await _tx(
        request,
        await ops.authorize_from_bundle(svc.ledger, _actor(request, session), bundle, _str(body, "gateway")),
    )


async def job_register(request: web.Request) -> web.Response:
    session = _require(request)
    body = await _json(request)
    job = request.app[SERVICE].register_csv_job(_actor(request, session), session.address, _str(body, "csv"))
    return web.json_response(job.view(), status=202)


async def job_onboard(request: web.Request) -> web.Response:
    session = _require(request)
    body = await _json(request)
    bundles = body.get("bundles") or {}
    if not isinstance(bundles, dict) or not all(isinstance(v, dict) for v in bundles.values()):
        raise ValueError("bundles maps file names to owner bundles (JSON objects)")
    job = request.app[SERVICE].onboard_csv_job(
        _actor(request, session),
        session.address,
        _str(body, "csv"),
        policy=_str(body, "policy"),
        gateways=_list(body, "gateways"),
        bundles={str(k): json.dumps(v).encode() for k, v in bundles.items()},
    )
    return web.json_response(job.view(), status=202)


async def job_reseal(request: web.Request) -> web.Response:
    session = _require(request)
    body = await _json(request)
    bundles = body.get("bundles")
    if not isinstance(bundles, dict) or not bundles or not all(isinstance(v, dict) for v in bundles.values()):
        raise ValueError("bundles maps file names to owner bundles (JSON objects), at least one")
    job = request.app[SERVICE].reseal_job(
        _actor(request, session),
        session.address,
        {str(k): json.dumps(v).encode() for k, v in bundles.items()},
        gateways=_list(body, "gateways"),
    )
    return web.json_response(job.view(), status=202)


async def job_status(request: web.Request) -> web.Response:
    session = _require(request)
    job = request.app[SERVICE].jobs.get(request.match_info["job_id"])
    if job is None or job.owner != session.address:
        raise web.HTTPNotFound(text=json.dumps({"error": "no such job"}), content_type="application/json")
    return web.json_response(job.view())


async def gateways(request: web.Request) -> web.Response:
    _require(request)
    svc = request.app[SERVICE]
    return web.json_response({"gateways": svc.gateways(), "removed": await svc.removed_gateways()})


async def gateway(request: web.Request) -> web.Response:
    _require(request)
    info = await ops.gateway_info(request.app[SERVICE].ledger, request.match_info["name"])
    return web.json_response(
        {**ops.jsonable(info), "gateway_id": "0x" + info.gateway_id.hex(), "consequences": info.consequences}
    )


async def register_gateway(request: web.Request) -> web.Response:
    session = _require(request)
    body = await _json(request)
    pub = _str(body, "x25519")
    return await _tx(
        request,
        await ops.register_gateway(
            request.app[SERVICE].ledger,
            _actor(request, session),
            _str(body, "gateway"),
            x25519_public_key=parse_bytes32(pub if pub.startswith("0x") else "0x" + pub, name="x25519"),
            account=_account(_str(body, "account")),
        ),
    )


def _account(text: str) -> str:
    from eth_utils.address import is_address

    if not is_address(text.strip()):
        raise ValueError("account must be an address, 0x + 40 hex")
    return text.strip()


async def policy(request: web.Request) -> web.Response:
    _require(request)
    asked = request.match_info["name"]
    ledger = request.app[SERVICE].ledger
    record = await ops.policy_info(ledger, asked)
    # the name its author gave it, from PolicyDefined (ids are policy_key(author, name))
    shown = ops.policy_label(await ledger.policy_name(record.policy_id), record.policy_id)
    return web.json_response({**ops.jsonable(record), "name": shown})


async def define_policy(request: web.Request) -> web.Response:
    session = _require(request)
    body = await _json(request)
    return await _tx(
        request,
        await ops.define_policy(
            _actor(request, session),
            _str(body, "name"),
            publish=_list(body, "publish"),
            subscribe=_list(body, "subscribe"),
        ),
    )


async def anchors(request: web.Request) -> web.Response:
    _require(request)
    return web.json_response({"anchors": request.app[SERVICE].anchors()})


async def inclusion(request: web.Request) -> web.Response:
    _require(request)
    try:
        seq = int(request.query.get("seq", ""))
    except ValueError:
        raise ValueError("seq must be an integer") from None
    return web.json_response(await request.app[SERVICE].check_inclusion(request.query.get("log", ""), seq))


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(openapi())


def _q(name: str, description: str, kind: str = "string") -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": {"type": kind},
        "description": description,
    }


def _body(required: list[str], props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


S = {"type": "string"}
SL = {"type": "array", "items": S}

ROUTES: list[Route] = [
    Route(
        method="POST",
        path="/api/session",
        handler=sign_in,
        summary="Sign in with a keystore and its passphrase",
        signed_in=False,
        body=_body(["keystore", "passphrase"], {"keystore": OBJECT, "passphrase": S}),
    ),
    Route(method="GET", path="/api/session", handler=who_am_i, summary="The signed-in actor and its roles"),
    Route(method="DELETE", path="/api/session", handler=sign_out, summary="Sign out"),
    Route(method="GET", path="/api/channel", handler=channel, summary="The channel in use"),
    Route(
        method="GET",
        path="/api/dashboard",
        handler=dashboard,
        summary="Devices by state, authentications per minute, recent alerts",
    ),
    Route(
        method="GET",
        path="/api/devices",
        handler=devices,
        summary="Search devices (from the index)",
        params=[
            _q("state", "lifecycle state, e.g. Active"),
            _q("owner", "owner account"),
            _q("gateway", "devices this gateway may authenticate"),
            _q("prefix", "device id prefix, hex"),
            _q("offset", "skip this many", "integer"),
            _q("limit", "page size, 1..1000", "integer"),
        ],
        response={
            "type": "object",
            "required": ["total", "offset", "devices"],
            "properties": {
                "total": {"type": "integer"},
                "offset": {"type": "integer"},
                "devices": {"type": "array", "items": DEVICE_ROW},
            },
        },
    ),
    Route(
        method="POST",
        path="/api/devices",
        handler=register_device,
        summary="Manufacturer: register a device",
        body=_body(
            ["device_id", "model", "firmware_hash", "characteristics"],
            {
                "device_id": S,
                "model": S,
                "firmware_hash": S,
                "characteristics": S,
                "claim_hash": S,
                "claim_code": S,
            },
        ),
        response=TX,
    ),
    Route(
        method="GET",
        path="/api/devices/{device_id}",
        handler=device,
        summary="A device (from the index)",
        params=[DEVICE_ID],
        response=DEVICE_ROW,
    ),
    Route(
        method="GET",
        path="/api/devices/{device_id}/history",
        handler=device_history,
        summary="A device's record, gateways, pending re-key, lifecycle from the chain, and authentications",
        params=[DEVICE_ID],
    ),
    Route(
        method="POST",
        path="/api/devices/{device_id}/actions/{action}",
        handler=device_action,
        summary="A lifecycle action (claim, activate, suspend, transfer, revoke, ...)",
        params=[
            DEVICE_ID,
            {
                "name": "action",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "enum": [a.name for a in ops.ACTIONS]},
            },
        ],
        body=_body([], {p: S for p in ops.PARAM_HELP}),
        response=TX,
    ),
    Route(
        method="POST",
        path="/api/devices/{device_id}/recover",
        handler=recover,
        summary="Owner: bring a device back after a clone alert (suspend + activate)",
        params=[DEVICE_ID],
        response={
            "type": "object",
            "required": ["transactions"],
            "properties": {"transactions": {"type": "array", "items": TX}},
        },
    ),
    Route(
        method="POST",
        path="/api/devices/{device_id}/gateways",
        handler=authorize,
        summary="Owner: authorize a gateway, sealing from the device's owner bundle",
        params=[DEVICE_ID],
        body=_body(["gateway", "bundle"], {"gateway": S, "bundle": OBJECT}),
        response=TX,
    ),
    Route(
        method="POST",
        path="/api/jobs/register",
        handler=job_register,
        summary="Manufacturer: register a CSV batch (a job)",
        body=_body(["csv"], {"csv": S}),
        response=JOB,
    ),
    Route(
        method="POST",
        path="/api/jobs/onboard",
        handler=job_onboard,
        summary="Owner: claim, set the policy, activate and authorize a CSV batch (a job)",
        body=_body(["csv", "policy"], {"csv": S, "policy": S, "gateways": SL, "bundles": OBJECT}),
        response=JOB,
    ),
    Route(
        method="POST",
        path="/api/jobs/reseal",
        handler=job_reseal,
        summary="Owner: after a firmware update, new sealed keys for every stale grant (a job)",
        body=_body(["bundles"], {"bundles": OBJECT, "gateways": SL}),
        response=JOB,
    ),
    Route(
        method="GET",
        path="/api/jobs/{job_id}",
        handler=job_status,
        summary="A batch job's progress and row errors",
        params=[{"name": "job_id", "in": "path", "required": True, "schema": S}],
        response=JOB,
    ),
    Route(
        method="GET",
        path="/api/gateways",
        handler=gateways,
        summary="Registered gateways, and the removed ones (when, by whom, what it means)",
    ),
    Route(
        method="POST",
        path="/api/gateways",
        handler=register_gateway,
        summary="Operator: register a gateway",
        body=_body(["gateway", "x25519", "account"], {"gateway": S, "x25519": S, "account": S}),
        response=TX,
    ),
    Route(
        method="GET",
        path="/api/gateways/{name}",
        handler=gateway,
        summary="A gateway's key and accounts; a removed one says when, by whom and what the removal means",
        params=[{"name": "name", "in": "path", "required": True, "schema": S}],
    ),
    Route(
        method="POST",
        path="/api/policies",
        handler=define_policy,
        summary="Owner: define a named policy",
        body=_body(["name", "publish"], {"name": S, "publish": SL, "subscribe": SL}),
        response=TX,
    ),
    Route(
        method="GET",
        path="/api/policies/{name}",
        handler=policy,
        summary="A policy's streams",
        params=[{"name": "name", "in": "path", "required": True, "schema": S}],
    ),
    Route(
        method="GET", path="/api/audit/anchors", handler=anchors, summary="Anchored batches of the audit logs"
    ),
    Route(
        method="GET",
        path="/api/audit/inclusion",
        handler=inclusion,
        summary="Check that an audit record is included under its on-chain Merkle root",
        params=[_q("log", "audit log file name"), _q("seq", "the record's sequence number", "integer")],
    ),
]


def openapi() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    errors = {
        str(code): {"description": text, "content": {"application/json": {"schema": ERROR}}}
        for code, text in (
            (400, "bad request"),
            (401, "not signed in"),
            (403, "CSRF token missing"),
            (404, "not found"),
            (409, "refused by the ledger"),
        )
    }
    for r in ROUTES:
        op: dict[str, Any] = {
            "summary": r.summary,
            "operationId": r.method.lower()
            + "_"
            + "_".join(part.strip("{}") for part in r.path.strip("/").split("/")),
            "parameters": r.params,
            "responses": {
                "202" if r.method == "POST" and r.response is JOB else "200": {  # a job started
                    "description": "ok",
                    "content": {"application/json": {"schema": r.response}},
                },
                **errors,
            },
        }
        if r.signed_in:
            op["security"] = [{"bearer": []}]
        if r.body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": r.body}}}
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "DIAMS console API",
            "version": "1.0.0",
            "description": "Every action of the DIAMS console. Sign in with POST /api/session; send the "
            "token in an Authorization header: Bearer <token>.",
        },
        "paths": paths,
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


def add_routes(app: web.Application) -> None:
    for r in ROUTES:
        app.router.add_route(r.method, r.path, r.handler)
    app.router.add_get("/openapi.json", openapi_json)
