"""A real local HTTP server answering as Keycloak's admin REST API does, from recorded replies in `data/`.

No Keycloak server can run on these machines. python-keycloak talks to this server over real HTTP (its
`requests` session, its token fetch, its paging), and gets the JSON Keycloak 26 documents for each endpoint
(RealmRepresentation, IdentityProviderRepresentation, ClientRepresentation, ...). `data/routes.json` maps each
request to its reply file. Group membership writes change the served state, and every request is logged.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

DATA = Path(__file__).parent / "data"
CLIENT_ID = "antenna-admin"
CLIENT_SECRET = "admin-client-secret-for-tests"  # a test credential the replay server checks
ACCESS_TOKEN = "recorded-admin-access-token"
# Paging and representation switches do not select a different reply.
_IGNORED_QUERY = {"first", "max", "briefRepresentation", "exact"}


@dataclass
class Replay:
    """The served state: `replies[route] = JSON`, editable by tests before (or between) requests."""

    replies: dict[str, Any]
    log: list[tuple[str, str]] = field(default_factory=list)
    refuse_writes: bool = False
    url: str = ""

    def reply(self, route: str) -> Any:
        return self.replies[route]

    def writes(self) -> list[tuple[str, str]]:
        return [(method, path) for method, path in self.log if method in ("PUT", "DELETE", "POST")]


def load_replies() -> dict[str, Any]:
    routes = json.loads((DATA / "routes.json").read_text(encoding="utf-8"))
    return {route: json.loads((DATA / name).read_text(encoding="utf-8")) for route, name in routes.items()}


def _route(method: str, raw_path: str) -> tuple[str, dict[str, list[str]]]:
    parts = urlsplit(raw_path)
    query = parse_qs(parts.query)
    kept = sorted((k, v[0]) for k, v in query.items() if k not in _IGNORED_QUERY)
    suffix = "?" + "&".join(f"{k}={v}" for k, v in kept) if kept else ""
    return f"{method} {unquote(parts.path)}{suffix}", query


def _handler(replay: Replay) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # Headers and body go out in separate writes; without this each reply waits for a delayed ACK.
        disable_nagle_algorithm = True
        # Keep-alive, as Keycloak serves it (every reply carries its Content-Length).
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test log is `replay.log`."""

        def _send(self, status: int, body: Any = None) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            if body is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _token(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            form = parse_qs(self.rfile.read(length).decode())
            given = (
                form.get("grant_type", [""])[0],
                form.get("client_id", [""])[0],
                form.get("client_secret", [""])[0],
            )
            if given != ("client_credentials", CLIENT_ID, CLIENT_SECRET):
                self._send(401, {"error": "unauthorized_client", "error_description": "Invalid client credentials"})
                return
            self._send(200, replay.replies["POST /realms/master/protocol/openid-connect/token"])

        def _handle(self, method: str) -> None:
            route, query = _route(method, self.path)
            replay.log.append((method, route))
            if route == "POST /realms/master/protocol/openid-connect/token":
                self._token()
                return
            if self.headers.get("Authorization") != f"Bearer {ACCESS_TOKEN}":
                self._send(401, {"error": "HTTP 401 Unauthorized"})
                return
            if method in ("PUT", "DELETE"):
                self._membership(method, route)
                return
            if route not in replay.replies:
                # A search that matches nothing is an empty list in Keycloak; anything else unknown is a 404.
                if "?" in route:
                    self._send(200, [])
                else:
                    self._send(404, {"error": "Could not find resource"})
                return
            body = replay.replies[route]
            if isinstance(body, list) and "first" in query:
                first = int(query["first"][0])
                body = body[first : first + int(query.get("max", ["100"])[0])]
            self._send(200, body)

        def _membership(self, method: str, route: str) -> None:
            # PUT/DELETE /admin/realms/<realm>/users/<id>/groups/<group id>
            parts = route.split(" ", 1)[1].strip("/").split("/")
            if len(parts) != 7 or parts[3] != "users" or parts[5] != "groups":
                self._send(405, {"error": "Method Not Allowed"})
                return
            if replay.refuse_writes:
                self._send(403, {"error": "HTTP 403 Forbidden"})
                return
            realm, user_id, group_id = parts[2], parts[4], parts[6]
            groups = replay.replies.setdefault(f"GET /admin/realms/{realm}/users/{user_id}/groups", [])
            group = next(
                (g for key, g in replay.replies.items() if "/group-by-path/" in key and g.get("id") == group_id),
                None,
            )
            if group is None:
                self._send(404, {"error": "Could not find group by id"})
                return
            brief = {"id": group["id"], "name": group["name"], "path": group["path"]}
            if method == "PUT" and brief not in groups:
                groups.append(brief)
            if method == "DELETE" and brief in groups:
                groups.remove(brief)
            self._send(204)

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def do_PUT(self) -> None:
            self._handle("PUT")

        def do_DELETE(self) -> None:
            self._handle("DELETE")

    return Handler


@contextmanager
def serve(replies: dict[str, Any] | None = None) -> Iterator[Replay]:
    """Serve `replies` (default: the recorded compliant realm) on a loopback port until the block ends."""
    replay = Replay(replies=copy.deepcopy(replies) if replies is not None else load_replies())
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(replay))
    replay.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield replay
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
