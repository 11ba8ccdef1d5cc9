"""A small OpenID provider with the device authorization grant (RFC 8628) and refresh tokens, over real HTTP.

Discovery names a ``device_authorization_endpoint`` and a ``token_endpoint``; the token endpoint answers
``authorization_pending`` a set number of times before it issues tokens (RS256 access tokens shaped like
the Antenna Keycloak's, which the gateway verifies through this issuer's JWKS), and it honours refresh
tokens until told to revoke them. It records every grant it served.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import jwt

from tests.support.idp import IdPKey

REALM = "/realms/antenna"
CLIENT_ID = "antenna-cli"


@dataclass
class DeviceFlowIssuer:
    person: str
    projects: dict[str, str]  # project → member | pi
    pending_polls: int = 3  # how many times the token endpoint says authorization_pending
    slow_downs: int = 0  # ... and, before those, slow_down
    access_lifetime: int = 300
    deny: bool = False
    key: IdPKey = field(default_factory=lambda: IdPKey.generate("RS256"))
    grants: list[str] = field(default_factory=list)  # the grant_type of every token request
    issued: list[str] = field(default_factory=list)  # access tokens, in order
    refresh_tokens: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self.issuer = f"http://127.0.0.1:{self._server.server_address[1]}{REALM}"
        self.user_code = "WDJB-MJHT"
        self._device_code = secrets.token_urlsafe(16)
        self._polls = 0

    def start(self) -> DeviceFlowIssuer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def revoke_refresh_tokens(self) -> None:
        self.refresh_tokens.clear()

    # -- documents and grants --------------------------------------------------------------------

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "jwks_uri": f"{self.issuer}/protocol/openid-connect/certs",
            "device_authorization_endpoint": f"{self.issuer}/protocol/openid-connect/auth/device",
            "token_endpoint": f"{self.issuer}/protocol/openid-connect/token",
            "grant_types_supported": ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"],
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    def _tokens(self) -> dict[str, Any]:
        now = int(time.time())
        groups = [f"/projects/{p}" for p in self.projects]
        groups += [f"/projects/{p}/pi" for p, role in self.projects.items() if role == "pi"]
        claims = {
            "iss": self.issuer,
            "sub": self.person,
            "myaccessid_cuid": self.person,
            "aud": ["antenna-gateway"],
            "azp": CLIENT_ID,
            "typ": "Bearer",
            "iat": now,
            "exp": now + self.access_lifetime,
            "jti": secrets.token_hex(8),
            "groups": groups,
            "realm_access": {"roles": []},
        }
        access = jwt.encode(claims, self.key.private, algorithm="RS256", headers={"kid": self.key.kid, "typ": "at+jwt"})
        refresh = secrets.token_urlsafe(24)
        self.issued.append(access)
        self.refresh_tokens.add(refresh)
        return {
            "access_token": access,
            "refresh_token": refresh,
            "token_type": "Bearer",
            "expires_in": self.access_lifetime,
        }

    def token_grant(self, form: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        grant = form.get("grant_type", "")
        self.grants.append(grant)
        if form.get("client_id") != CLIENT_ID:
            return 401, {"error": "invalid_client"}
        if grant == "urn:ietf:params:oauth:grant-type:device_code":
            if form.get("device_code") != self._device_code:
                return 400, {"error": "invalid_grant"}
            if self.deny:
                return 400, {"error": "access_denied"}
            if self._polls < self.slow_downs:
                self._polls += 1
                return 400, {"error": "slow_down"}
            if self._polls < self.slow_downs + self.pending_polls:
                self._polls += 1
                return 400, {"error": "authorization_pending"}
            return 200, self._tokens()
        if grant == "refresh_token":
            token = form.get("refresh_token", "")
            if token not in self.refresh_tokens:
                return 400, {"error": "invalid_grant"}
            self.refresh_tokens.discard(token)  # rotated, as Keycloak does
            return 200, self._tokens()
        return 400, {"error": "unsupported_grant_type"}

    def device_authorization(self, form: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        if form.get("client_id") != CLIENT_ID:
            return 401, {"error": "invalid_client"}
        verify = f"{self.issuer}/device"
        return 200, {
            "device_code": self._device_code,
            "user_code": self.user_code,
            "verification_uri": verify,
            "verification_uri_complete": f"{verify}?user_code={self.user_code}",
            "expires_in": 600,
            "interval": 0,  # poll at once: the test's pending answers need no waiting
        }

    # -- HTTP ------------------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == f"{REALM}/.well-known/openid-configuration":
                    self._send(200, issuer.discovery())
                elif self.path == f"{REALM}/protocol/openid-connect/certs":
                    self._send(200, {"keys": [issuer.key.public_jwk]})
                else:
                    self._send(404, {"error": "not found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                if self.path == f"{REALM}/protocol/openid-connect/token":
                    self._send(*issuer.token_grant(form))
                elif self.path == f"{REALM}/protocol/openid-connect/auth/device":
                    self._send(*issuer.device_authorization(form))
                else:
                    self._send(404, {"error": "not found"})

            def _send(self, status: int, body: Mapping[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
