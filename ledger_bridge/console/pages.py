"""The console's pages: server-rendered HTML (Jinja2, autoescaped), one form per action, a confirmation
before every action that takes rights away. Pages call the same `ConsoleService` and
`ledger_bridge.operations` as the API, and show only what the signed-in actor's roles allow (the
contracts enforce it anyway)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web

from .. import operations as ops
from ..csv_import import parse_device_id
from . import api
from .context import SERVICE, session_of, set_session_cookie
from .service import parse_bundle

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
)
_ENV.filters["when"] = lambda ts: (
    ""
    if ts is None
    else datetime.datetime.fromtimestamp(float(ts), datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
)
_ENV.filters["short"] = lambda text, n=10: (
    text if not text or len(text) <= 2 * n + 2 else f"{text[: n + 2]}…{text[-n:]}"
)

STATE_COLOURS = {
    "Manufactured": "#8a8f98",
    "Claimed": "#4d7cc7",
    "Active": "#2f9e5b",
    "Suspended": "#d99a1e",
    "Transferred": "#8e5bd0",
    "Revoked": "#c94141",
    "Decommissioned": "#55595f",
}


def render(
    request: web.Request, template: str, context: dict[str, Any], *, status: int = 200
) -> web.Response:
    session = session_of(request)
    page = _ENV.get_template(template).render(
        session=session,
        csrf=session.csrf if session is not None else "",
        path=request.path,
        channel=request.app[SERVICE].channel() if SERVICE in request.app else {},
        colours=STATE_COLOURS,
        **context,
    )
    return web.Response(text=page, content_type="text/html", status=status)


def _signed_in(request: web.Request) -> Any:
    session = session_of(request)
    if session is None:
        raise web.HTTPSeeOther("/login?" + urlencode({"next": request.path_qs}))
    return session


# ---- sign in / out ----
async def login_page(request: web.Request) -> web.Response:
    return render(request, "login.html", {"error": "", "next": request.query.get("next", "/")})


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    upload = form.get("keystore")
    passphrase = str(form.get("passphrase", ""))
    target = str(form.get("next", "/"))
    if not target.startswith("/") or target.startswith("//"):
        target = "/"  # never an open redirect
    error = ""
    if not isinstance(upload, web.FileField) or not passphrase:
        error = "choose your keystore file and type its passphrase"
    else:
        try:
            blob = json.loads(upload.file.read(1_000_000))
            session = await api.open_session(request, blob, passphrase)
        except (ValueError, web.HTTPUnauthorized) as exc:
            error = (
                json.loads(exc.text or "{}").get("error", "")
                if isinstance(exc, web.HTTPUnauthorized)
                else "the keystore file is not JSON"
            )
        else:
            response = web.HTTPSeeOther(target)
            set_session_cookie(request, response, session)
            raise response
    return render(request, "login.html", {"error": error, "next": target}, status=401)


async def logout(request: web.Request) -> web.StreamResponse:
    session = session_of(request)
    if session is not None:
        from .context import SESSIONS

        request.app[SESSIONS].close(session.token)
    response = web.HTTPSeeOther("/login")
    set_session_cookie(request, response, None)
    raise response


# ---- reads ----
async def dashboard(request: web.Request) -> web.Response:
    _signed_in(request)
    data = request.app[SERVICE].dashboard()
    return render(request, "dashboard.html", {"data": data, "chart": _chart(data["authentications"])})


def _chart(series: dict[str, Any], width: int = 720, height: int = 160) -> dict[str, Any]:
    """Bars of authentications per minute (succeeded up, failed down), as SVG coordinates."""
    ok, failed = series["ok"], series["failed"]
    n = len(ok)
    top = max([1, *ok, *failed])
    half = (height - 20) / 2
    step = width / n
    bars = []
    for i in range(n):
        x = round(i * step + 1, 1)
        up = round(ok[i] / top * half, 1)
        down = round(failed[i] / top * half, 1)
        minute = datetime.datetime.fromtimestamp(series["start"] + i * 60, datetime.UTC).strftime("%H:%M")
        bars.append(
            {
                "x": x,
                "w": round(step - 2, 1),
                "ok": ok[i],
                "failed": failed[i],
                "up": up,
                "down": down,
                "label": minute,
            }
        )
    return {
        "width": width,
        "height": height,
        "mid": round(half + 10, 1),
        "bars": bars,
        "top": top,
        "total_ok": sum(ok),
        "total_failed": sum(failed),
        "first": bars[0]["label"] if bars else "",
        "last": bars[-1]["label"] if bars else "",
    }


async def devices(request: web.Request) -> web.Response:
    _signed_in(request)
    q = request.query
    filters = api.list_filters(q)
    result = request.app[SERVICE].devices(**filters)
    keep = {k: v for k, v in q.items() if k in ("state", "owner", "gateway", "prefix", "limit") and v}

    def page_link(offset: int) -> str:
        return "/devices?" + urlencode({**keep, "offset": offset})

    limit, offset = filters["limit"], filters["offset"]
    gateway = filters["gateway"]
    removed = None if gateway is None else request.app[SERVICE].removal_block(gateway)
    return render(
        request,
        "devices.html",
        {
            "result": result,
            # a removed gateway serves nobody: the empty list says why
            "removed": None if removed is None else {"gateway": ops.id_text(gateway), "block": removed},
            "q": q,
            "limit": limit,
            "offset": offset,
            "prev": page_link(max(0, offset - limit)) if offset > 0 else None,
            "next": page_link(offset + limit) if offset + limit < result["total"] else None,
            "states": list(STATE_COLOURS),
            "gateways": [g["gateway"] for g in request.app[SERVICE].gateways()],
        },
    )


def _allowed_actions(session: Any, detail: dict[str, Any]) -> list[ops.Action]:
    """Actions the actor may take on this device (the contracts decide anyway)."""
    me = session.address.lower()
    owner = (detail["owner"] or "").lower() == me
    pending = (detail["pending_owner"] or "").lower() == me
    admin = session.may("admin")
    state = detail["state"]
    allowed = []
    for a in ops.ACTIONS:
        if a.name == "claim":
            ok = state == "Manufactured"
        elif a.name == "accept-transfer":
            ok = pending
        elif a.name in ("suspend", "revoke"):
            ok = owner or admin
        elif a.name == "record-firmware":
            ok = session.may("maintainer")
        else:
            ok = owner
        from ..model import TRANSITIONS

        method_name = {
            "accept-transfer": "acceptTransfer",
            "cancel-transfer": "cancelTransfer",
            "approve-maintainer": "approveMaintainer",
            "record-firmware": "recordFirmware",
            "deauthorize-gateway": "deauthorizeGateway",
            "set-policy": "setPolicy",
        }.get(a.name, a.name)
        rule = TRANSITIONS.get(method_name)
        if rule is not None and state not in {s.label for s in rule[0]}:
            ok = False
        if ok:
            allowed.append(a)
    return allowed


async def device(request: web.Request) -> web.Response:
    session = _signed_in(request)
    dev = parse_device_id(request.match_info["device_id"])
    detail = await request.app[SERVICE].device_detail(dev)
    owner = (detail["owner"] or "").lower() == session.address.lower()
    return render(
        request,
        "device.html",
        {
            "d": detail,
            "actions": _allowed_actions(session, detail),
            "is_owner": owner,
            "done": request.query.get("done", ""),
        },
    )


# ---- actions, each confirmed ----
async def action_form(request: web.Request) -> web.Response:
    _signed_in(request)
    dev = parse_device_id(request.match_info["device_id"])
    name = request.match_info["action"]
    spec = ops.ACTIONS_BY_NAME.get(name)
    if spec is None:
        raise web.HTTPNotFound()
    return render(
        request,
        "action.html",
        {
            "device_id": dev.hex(),
            "action": spec,
            "param_help": ops.PARAM_HELP,
            "gateways": [g["gateway"] for g in request.app[SERVICE].gateways()],
        },
    )


async def action(request: web.Request) -> web.StreamResponse:
    session = _signed_in(request)
    dev = parse_device_id(request.match_info["device_id"])
    name = request.match_info["action"]
    form = await request.post()
    if form.get("confirm") != "yes":
        raise ValueError("the action was not confirmed")
    params = {k: str(v) for k, v in form.items() if k in ops.PARAM_HELP}
    actor = request.app[SERVICE].ledger.actor(session.signer)
    outcome = await ops.run_action(actor, name, dev, params)
    await request.app[SERVICE].sync()
    raise web.HTTPSeeOther(
        f"/devices/{dev.hex()}?" + urlencode({"done": f"{name}: tx {outcome.transaction_hash}"})
    )


async def recover_form(request: web.Request) -> web.Response:
    _signed_in(request)
    dev = parse_device_id(request.match_info["device_id"])
    return render(request, "recover.html", {"device_id": dev.hex()})


async def recover(request: web.Request) -> web.StreamResponse:
    session = _signed_in(request)
    dev = parse_device_id(request.match_info["device_id"])
    form = await request.post()
    if form.get("confirm") != "yes":
        raise ValueError("the recovery was not confirmed")
    svc = request.app[SERVICE]
    outcomes = await ops.recover_after_clone(svc.ledger, svc.ledger.actor(session.signer), dev)
    await svc.sync()
    done = "recovered: " + ", ".join(o.transaction_hash for o in outcomes)
    raise web.HTTPSeeOther(f"/devices/{dev.hex()}?" + urlencode({"done": done}))


async def authorize_form(request: web.Request) -> web.Response:
    _signed_in(request)
    dev = parse_device_id(request.match_info["device_id"])
    return render(
        request,
        "authorize.html",
        {
            "device_id": dev.hex(),
            "gateways": [g["gateway"] for g in request.app[SERVICE].gateways()],
        },
    )


async def authorize(request: web.Request) -> web.StreamResponse:
    session = _signed_in(request)
    dev = parse_device_id(request.match_info["device_id"])
    form = await request.post()
    upload = form.get("bundle")
    if not isinstance(upload, web.FileField):
        raise ValueError("choose the device's owner bundle (<id>.owner.json)")
    bundle = parse_bundle(upload.file.read(100_000))
    if bundle.device_id != dev:
        raise ValueError("the bundle is another device's")
    svc = request.app[SERVICE]
    gateway = str(form.get("gateway", ""))
    outcome = await ops.authorize_from_bundle(svc.ledger, svc.ledger.actor(session.signer), bundle, gateway)
    await svc.sync()
    raise web.HTTPSeeOther(
        f"/devices/{dev.hex()}?" + urlencode({"done": f"authorized {gateway}: tx {outcome.transaction_hash}"})
    )


# ---- enrolment ----
async def enroll_page(request: web.Request) -> web.Response:
    _signed_in(request)
    return render(
        request,
        "enroll.html",
        {
            "gateways": [g["gateway"] for g in request.app[SERVICE].gateways()],
            "done": request.query.get("done", ""),
        },
    )


async def enroll_device(request: web.Request) -> web.StreamResponse:
    session = _signed_in(request)
    form = await request.post()
    reg = api.registration_from({k: str(v) for k, v in form.items()})
    outcome = await request.app[SERVICE].ledger.actor(session.signer).register_device(reg)
    await request.app[SERVICE].sync()
    raise web.HTTPSeeOther(
        f"/devices/{reg.device_id.hex()}?" + urlencode({"done": f"registered: tx {outcome.transaction_hash}"})
    )


async def _upload_text(form: Any, name: str) -> str:
    upload = form.get(name)
    if isinstance(upload, web.FileField):
        return upload.file.read(16_000_000).decode("utf-8")
    raise ValueError("choose a CSV file")


async def enroll_csv(request: web.Request) -> web.StreamResponse:
    session = _signed_in(request)
    form = await request.post()
    svc = request.app[SERVICE]
    actor = svc.ledger.actor(session.signer)
    text = await _upload_text(form, "csv")
    if request.match_info["kind"] == "register":
        job = svc.register_csv_job(actor, session.address, text)
    else:
        bundles = _bundles(form)
        gateways = [str(g) for g in form.getall("gateway", []) if str(g)]
        job = svc.onboard_csv_job(
            actor,
            session.address,
            text,
            policy=str(form.get("policy", "")),
            gateways=gateways,
            bundles=bundles,
        )
    raise web.HTTPSeeOther(f"/jobs/{job.id}")


def _bundles(form: Any) -> dict[str, bytes]:
    return {
        Path(f.filename).name: f.file.read(100_000)
        for f in form.getall("bundles", [])
        if isinstance(f, web.FileField) and f.filename
    }


async def reseal(request: web.Request) -> web.StreamResponse:
    session = _signed_in(request)
    form = await request.post()
    bundles = _bundles(form)
    if not bundles:
        raise ValueError("choose the devices' owner bundles (<id>.owner.json)")
    svc = request.app[SERVICE]
    gateways = [str(g) for g in form.getall("gateway", []) if str(g)]
    job = svc.reseal_job(svc.ledger.actor(session.signer), session.address, bundles, gateways=gateways)
    raise web.HTTPSeeOther(f"/jobs/{job.id}")


async def job_page(request: web.Request) -> web.Response:
    session = _signed_in(request)
    job = request.app[SERVICE].jobs.get(request.match_info["job_id"])
    if job is None or job.owner != session.address:
        raise web.HTTPNotFound()
    return render(request, "job.html", {"job": job.view()})


async def define_policy(request: web.Request) -> web.StreamResponse:
    session = _signed_in(request)
    form = await request.post()
    name = str(form.get("name", ""))
    outcome = await ops.define_policy(
        request.app[SERVICE].ledger.actor(session.signer),
        name,
        publish=_split(form.get("publish", "")),
        subscribe=_split(form.get("subscribe", "")),
    )
    raise web.HTTPSeeOther(
        "/enroll?" + urlencode({"done": f"policy {name} defined: tx {outcome.transaction_hash}"})
    )


def _split(value: object) -> list[str]:
    return [s.strip() for s in str(value).split(",") if s.strip()]


# ---- gateways, audit, channel ----
async def gateways(request: web.Request) -> web.Response:
    _signed_in(request)
    return render(
        request,
        "gateways.html",
        {
            "gateways": request.app[SERVICE].gateways(),
            "removed": await request.app[SERVICE].removed_gateways(),
            "done": request.query.get("done", ""),
        },
    )


async def register_gateway(request: web.Request) -> web.StreamResponse:
    session = _signed_in(request)
    form = await request.post()
    from ..csv_import import parse_bytes32

    pub = str(form.get("x25519", "")).strip()
    svc = request.app[SERVICE]
    outcome = await ops.register_gateway(
        svc.ledger,
        svc.ledger.actor(session.signer),
        str(form.get("gateway", "")),
        x25519_public_key=parse_bytes32(pub if pub.startswith("0x") else "0x" + pub, name="x25519"),
        account=api._account(str(form.get("account", ""))),
    )
    await request.app[SERVICE].sync()
    raise web.HTTPSeeOther("/gateways?" + urlencode({"done": f"registered: tx {outcome.transaction_hash}"}))


async def audit(request: web.Request) -> web.Response:
    _signed_in(request)
    svc = request.app[SERVICE]
    result = None
    error = ""
    if request.query.get("seq"):
        try:
            result = await svc.check_inclusion(request.query.get("log", ""), int(request.query["seq"]))
        except ValueError as exc:
            error = str(exc)
    return render(
        request,
        "audit.html",
        {
            "anchors": svc.anchors(),
            "logs": [p.name for p in svc.audit_logs],
            "result": result,
            "error": error,
            "q": request.query,
        },
    )


async def channel_page(request: web.Request) -> web.Response:
    _signed_in(request)
    return render(request, "channel.html", {})


async def api_docs(request: web.Request) -> web.Response:
    return render(request, "api_docs.html", {"spec": api.openapi()})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/", dashboard)
    r.add_get("/login", login_page)
    r.add_post("/login", login)
    r.add_post("/logout", logout)
    r.add_get("/devices", devices)
    r.add_get("/devices/{device_id}", device)
    r.add_get("/devices/{device_id}/actions/{action}", action_form)
    r.add_post("/devices/{device_id}/actions/{action}", action)
    r.add_get("/devices/{device_id}/recover", recover_form)
    r.add_post("/devices/{device_id}/recover", recover)
    r.add_get("/devices/{device_id}/authorize", authorize_form)
    r.add_post("/devices/{device_id}/authorize", authorize)
    r.add_get("/enroll", enroll_page)
    r.add_post("/enroll/device", enroll_device)
    r.add_post("/enroll/csv/{kind:register|onboard}", enroll_csv)
    r.add_post("/enroll/policy", define_policy)
    r.add_post("/enroll/reseal", reseal)
    r.add_get("/jobs/{job_id}", job_page)
    r.add_get("/gateways", gateways)
    r.add_post("/gateways", register_gateway)
    r.add_get("/audit", audit)
    r.add_get("/channel", channel_page)
    r.add_get("/docs/api", api_docs)
