"""The development issuer's HTTP face, only in ``antenna dev``: discovery, key set, the device authorization
grant (RFC 8628) with a page to pick a demo person and confirm the code, and the token endpoint.

Paths follow Keycloak's, so the CLI signs in here exactly as it does against the Antenna's Keycloak.
"""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

from gateway.identity.dev_issuer import JWKS_PATH, DeviceFlowError
from gateway.runtime import DevMode

PREFIX = "/dev-issuer"
DEVICE_PATH = "/protocol/openid-connect/auth/device"
TOKEN_PATH = "/protocol/openid-connect/token"  # noqa: S105 - a path, not a secret
VERIFY_PATH = "/device"


async def _form(request: Request) -> dict[str, str]:
    # The OAuth endpoints take application/x-www-form-urlencoded bodies; parsed here without a multipart library.
    body = (await request.body()).decode("utf-8", errors="replace")
    return {name: values[0] for name, values in parse_qs(body).items()}


def _oauth_error(code: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": code}, status_code=status, headers={"Cache-Control": "no-store"})


def mount(app: FastAPI, dev: DevMode) -> None:
    router = APIRouter(prefix=PREFIX, include_in_schema=False)
    base = dev.issuer.issuer.rstrip("/")

    @router.get("/.well-known/openid-configuration")
    def discovery() -> dict[str, Any]:
        return dev.issuer.discovery(
            {
                "device_authorization_endpoint": base + DEVICE_PATH,
                "token_endpoint": base + TOKEN_PATH,
                "grant_types_supported": ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"],
            }
        )

    @router.get(JWKS_PATH)
    def jwks() -> dict[str, Any]:
        return dev.issuer.jwks()

    @router.post(DEVICE_PATH)
    async def device_authorization(request: Request) -> JSONResponse:
        form = await _form(request)
        if form.get("client_id") != dev.issuer.client_id:
            return _oauth_error("invalid_client", 401)
        grant = dev.sign_in.start(form["client_id"])
        return JSONResponse(
            {
                "device_code": grant.device_code,
                "user_code": grant.user_code,
                "verification_uri": base + VERIFY_PATH,
                "verification_uri_complete": base + VERIFY_PATH + "?" + urlencode({"user_code": grant.user_code}),
                "expires_in": 600,
                "interval": 1,  # a development issuer on loopback: no reason to make anyone wait five seconds
            },
            headers={"Cache-Control": "no-store"},
        )

    @router.post(TOKEN_PATH)
    async def token(request: Request) -> JSONResponse:
        form = await _form(request)
        client_id = form.get("client_id", "")
        try:
            if form.get("grant_type") == "urn:ietf:params:oauth:grant-type:device_code":
                tokens = dev.sign_in.redeem(form.get("device_code", ""), client_id)
            elif form.get("grant_type") == "refresh_token":
                tokens = dev.sign_in.refresh(form.get("refresh_token", ""), client_id)
            else:
                return _oauth_error("unsupported_grant_type")
        except DeviceFlowError as exc:
            return _oauth_error(exc.code)
        return JSONResponse(tokens, headers={"Cache-Control": "no-store"})

    @router.get(VERIFY_PATH, response_class=HTMLResponse)
    def verify_page(user_code: str = "") -> HTMLResponse:
        return HTMLResponse(_page(dev, user_code))

    @router.post(VERIFY_PATH, response_class=HTMLResponse)
    async def verify(request: Request) -> HTMLResponse:
        form = await _form(request)
        person = form.get("person", "")
        if not dev.sign_in.confirm(form.get("user_code", ""), person):
            message = "That code is unknown, expired or already used: start again with <code>antenna login</code>."
            return HTMLResponse(_page(dev, form.get("user_code", ""), message), status_code=400)
        title = escape(dev.sign_in.people[person].title)
        return HTMLResponse(
            _shell(
                f"<p>Signed in as <strong>{escape(person)}</strong> ({title}).</p>"
                "<p>You can close this page and go back to your terminal.</p>"
            )
        )

    app.include_router(router)


def _page(dev: DevMode, user_code: str, message: str = "") -> str:
    people = "".join(
        f'<li><button name="person" value="{escape(p.person)}">{escape(p.title)}</button>'
        f" <small>{escape(p.person)}</small></li>"
        for p in dev.sign_in.people.values()
    )
    warning = f'<p role="alert">{message}</p>' if message else ""
    return _shell(
        f'{warning}<form method="post"><p><label>Code shown in your terminal '
        f'<input name="user_code" value="{escape(user_code)}" required autocomplete="off"></label></p>'
        f"<p>Sign in as:</p><ul>{people}</ul></form>"
    )


def _shell(body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Antenna (development) sign-in</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1"></head><body>'
        "<h1>Antenna development sign-in</h1><p>Demo people of <code>antenna dev</code>; "
        f"in production this is MyAccessID.</p>{body}</body></html>"
    )
