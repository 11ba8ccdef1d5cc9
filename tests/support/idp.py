"""A small OpenID provider for tests: real RSA/EC keys, discovery and JWKS served over real HTTP.

`LoopbackIdP` listens on a loopback port in a thread; its key set can be rotated, its availability
switched off (503) or the server stopped (connection refused), and it counts what it serves. The
`test_idp` fixture gives a started one; `test_idp.token(**claims, headers=...)` mints a Keycloak-shaped
access token signed with its current key.
"""

from __future__ import annotations

import itertools
import json
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from jwt.utils import base64url_encode

from gateway.clock import Clock, SystemClock
from gateway.settings import OIDCSettings

REALM_PATH = "/realms/antenna"
JWKS_PATH = "/protocol/openid-connect/certs"
DEFAULT_PERSON = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0@myaccessid.org"

Signer = Callable[[bytes], bytes]

# RSA key generation costs ~0.1 s; tests draw from a small cycle of keys. Consecutive draws always
# differ, so a test using fewer than this many RSA keys never sees two alike.
_RSA_POOL_SIZE = 8
_rsa_pool: list[rsa.RSAPrivateKey] = []
_rsa_draws = itertools.count()


def _rsa_key() -> rsa.RSAPrivateKey:
    index = next(_rsa_draws) % _RSA_POOL_SIZE
    if index == len(_rsa_pool):
        _rsa_pool.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return _rsa_pool[index]


def encode_jws(header: Mapping[str, Any], payload: Any, signer: Signer) -> str:
    """A compact JWS with exactly this header, for tokens no well-behaved library would produce."""
    b64 = base64url_encode
    signing_input = b64(json.dumps(header).encode()) + b"." + b64(json.dumps(payload).encode())
    return (signing_input + b"." + b64(signer(signing_input))).decode()


@dataclass
class IdPKey:
    """A signing key pair and its public JWK."""

    kid: str
    alg: str
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    public_jwk: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        if isinstance(self.private, rsa.RSAPrivateKey):
            public = RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        else:
            public = ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        self.public_jwk = {**public, "kid": self.kid, "alg": self.alg, "use": "sig"}

    @classmethod
    def generate(cls, alg: str = "RS256", kid: str | None = None) -> IdPKey:
        private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
        if alg.startswith(("RS", "PS")):
            private = _rsa_key()
        elif alg == "ES256":
            private = ec.generate_private_key(ec.SECP256R1())
        else:
            raise ValueError(f"no test keys for {alg}")
        return cls(kid or uuid.uuid4().hex, alg, private)

    def signer(self, alg: str | None = None) -> Signer:
        algorithm = jwt.get_algorithm_by_name(alg or self.alg)
        return lambda message: algorithm.sign(message, self.private)


class LoopbackIdP:
    """An issuer at ``http://127.0.0.1:<port>/realms/antenna`` with Keycloak's endpoint layout."""

    def __init__(self, *, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self.available = True
        self.keys: dict[str, IdPKey] = {}
        self.signing_kid = ""
        self.discovery_hits = 0
        self.jwks_hits = 0
        # Clear `gate` to hold every request until it is set again; `held` is set when one waits.
        self.gate = threading.Event()
        self.gate.set()
        self.held = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._running = False
        self.issuer = f"http://127.0.0.1:{self._server.server_address[1]}{REALM_PATH}"
        self.rotate()

    # -- the server --------------------------------------------------------------------------

    def start(self) -> LoopbackIdP:
        self._thread.start()
        self._running = True
        return self

    def close(self) -> None:
        """Stop listening: from now on connections are refused."""
        self.gate.set()
        if self._running:
            self._server.shutdown()
            self._running = False
        self._server.server_close()

    def _document(self, path: str) -> dict[str, Any] | None:
        with self._lock:
            if path == f"{REALM_PATH}/.well-known/openid-configuration":
                self.discovery_hits += 1
                return {
                    "issuer": self.issuer,
                    "jwks_uri": self.issuer + JWKS_PATH,
                    "response_types_supported": ["code"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                }
            if path == REALM_PATH + JWKS_PATH:
                self.jwks_hits += 1
                return {"keys": [dict(k.public_jwk) for k in self.keys.values()]}
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if not idp.gate.is_set():
                    idp.held.set()
                    idp.gate.wait(timeout=30)
                if not idp.available:
                    self._send(503, {"error": "unavailable"})
                    return
                document = idp._document(self.path)
                if document is None:
                    self._send(404, {"error": "not found"})
                else:
                    self._send(200, document)

            def _send(self, status: int, body: Mapping[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        return Handler

    # -- keys --------------------------------------------------------------------------------

    def add_key(self, alg: str = "RS256", kid: str | None = None) -> IdPKey:
        """Publish a new key (not yet used for signing)."""
        key = IdPKey.generate(alg, kid)
        with self._lock:
            self.keys[key.kid] = key
        return key

    def remove_key(self, kid: str) -> None:
        with self._lock:
            del self.keys[kid]

    def rotate(self, alg: str = "RS256", *, drop: Iterable[str] = ()) -> IdPKey:
        """Publish a new key, sign with it from now on, and unpublish the kids in ``drop``."""
        key = self.add_key(alg)
        self.signing_kid = key.kid
        for kid in drop:
            self.remove_key(kid)
        return key

    @property
    def signing_key(self) -> IdPKey:
        return self.keys[self.signing_kid]

    # -- tokens ------------------------------------------------------------------------------

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """The claims of a Keycloak access token for the Antenna, with ``overrides`` applied."""
        now = int(self.clock.now().timestamp())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": "5c3f4a8e-2b1d-4e6f-9a7c-0d1e2f3a4b5c",
            "aud": ["antenna-gateway", "account"],
            "azp": "antenna-cli",
            "typ": "Bearer",
            "iat": now,
            "exp": now + 300,
            "jti": str(uuid.uuid4()),
            "scope": "openid profile",
            "preferred_username": DEFAULT_PERSON,
            "myaccessid_cuid": DEFAULT_PERSON,
            "groups": ["/projects/demo"],
            "realm_access": {"roles": ["default-roles-antenna", "offline_access"]},
        }
        claims.update(overrides)
        return claims

    def token(
        self,
        *,
        headers: Mapping[str, Any] | None = None,
        omit: Iterable[str] = (),
        key: IdPKey | None = None,
        **claims: Any,
    ) -> str:
        """A signed access token. ``headers`` entries override the header (None removes one),
        ``omit`` drops claims, ``key`` signs with another key (its kid unless the header says else)."""
        key = key or self.signing_key
        header: dict[str, Any] = {"alg": key.alg, "kid": key.kid, "typ": "at+jwt"}
        for name, value in (headers or {}).items():
            if value is None:
                header.pop(name, None)
            else:
                header[name] = value
        payload = self.claims(**claims)
        for name in omit:
            payload.pop(name, None)
        alg = header.get("alg")
        signer: Signer = (lambda _: b"") if alg == "none" else key.signer(alg)
        return encode_jws(header, payload, signer)

    def oidc_settings(self, **overrides: Any) -> OIDCSettings:
        """Gateway OIDC settings trusting this issuer."""
        return OIDCSettings(issuer=self.issuer, **overrides)


@pytest.fixture
def test_idp() -> Iterator[LoopbackIdP]:
    idp = LoopbackIdP().start()
    try:
        yield idp
    finally:
        idp.close()
