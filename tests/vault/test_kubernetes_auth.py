"""Kubernetes auth, the gateway's identity in the Kubernetes deployment shape.

No Kubernetes runs here. OpenBao's real kubernetes auth method is pointed at a stand-in for the one API it
calls (TokenReview), which records what it is asked; so the test proves what the gateway sends (its
projected service-account token, to the configured role and mount) and that OpenBao turns it into a token
with the gateway policy. That the real API server accepts the token is Kubernetes' part, not tested here.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from gateway.secrets.metrics import Event
from gateway.secrets.vault import VaultSecretStore
from tests.vault.support import VaultEnv

NAMESPACE, ACCOUNT = "antenna", "antenna-gateway"


class TokenReviews:
    def __init__(self, uid: str) -> None:
        self.uid = uid
        self.requests: list[dict[str, Any]] = []


@pytest.fixture
def token_review_api() -> Iterator[tuple[str, TokenReviews]]:
    reviews = TokenReviews(str(uuid.uuid4()))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            reviews.requests.append({"path": self.path, "body": body})
            answer = {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "status": {
                    "authenticated": True,
                    "user": {
                        "username": f"system:serviceaccount:{NAMESPACE}:{ACCOUNT}",
                        "uid": reviews.uid,
                        "groups": ["system:serviceaccounts"],
                    },
                },
            }
            data = json.dumps(answer).encode()
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", reviews
    finally:
        server.shutdown()
        server.server_close()


def _unused_ca_pem() -> str:
    """OpenBao insists on a CA certificate for the API server; over plain HTTP it is never used."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stand-in kubernetes CA")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _service_account_token(uid: str) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = {
        "iss": "kubernetes/serviceaccount",
        "sub": f"system:serviceaccount:{NAMESPACE}:{ACCOUNT}",
        "kubernetes.io/serviceaccount/namespace": NAMESPACE,
        "kubernetes.io/serviceaccount/service-account.name": ACCOUNT,
        "kubernetes.io/serviceaccount/service-account.uid": uid,
    }
    return jwt.encode(claims, key, algorithm="RS256")


@pytest.mark.anyio
async def test_kubernetes_login_sends_the_service_account_token_and_gets_the_gateway_policy(
    vault_env: VaultEnv, token_review_api: tuple[str, TokenReviews], tmp_path: Path
) -> None:
    api, reviews = token_review_api
    mount = f"k8s-{uuid.uuid4().hex[:8]}"
    root = vault_env.root
    root.sys.enable_auth_method("kubernetes", path=mount)
    root.write_data(
        f"auth/{mount}/config",
        data={
            "kubernetes_host": api,
            "kubernetes_ca_cert": _unused_ca_pem(),
            "disable_local_ca_jwt": True,
            "token_reviewer_jwt": "reviewer",
        },
    )
    root.write_data(
        f"auth/{mount}/role/{ACCOUNT}",
        data={
            "bound_service_account_names": ACCOUNT,
            "bound_service_account_namespaces": NAMESPACE,
            "token_policies": vault_env.gateway_policy,
            "token_no_default_policy": True,
            "token_period": 3600,
        },
    )
    sa_token = _service_account_token(reviews.uid)
    token_file = tmp_path / "sa-token"
    token_file.write_text(sa_token)
    settings = vault_env.vault.model_copy(update={"auth_method": "kubernetes", "kubernetes_role": ACCOUNT})
    options = vault_env.options.model_copy(update={"kubernetes_mount": mount, "kubernetes_token_file": str(token_file)})
    vault_env.put_site("lumi", {"jwt_key": "k8s-key"})
    store = VaultSecretStore(settings, options=options, background=False)
    assert (await store.site_credentials("lumi")).get("jwt_key") == "k8s-key"
    assert store._token is not None
    assert store._token.policies == (vault_env.gateway_policy,)
    assert store.metrics.total(Event.LOGIN) == 1
    (review,) = reviews.requests
    assert review["path"] == "/apis/authentication.k8s.io/v1/tokenreviews"
    assert review["body"]["spec"]["token"] == sa_token
