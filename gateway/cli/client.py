"""The CLI's side of the API: a profile on disk (mode 0600), device-flow sign-in, refresh, HTTP calls.

httpx is imported when a command first calls out, not before: ``antenna --help`` starts without it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


class CliError(Exception):
    """A failure to show the user. ``refused`` is True when the gateway said no (a 4xx problem)."""

    def __init__(self, message: str, *, refused: bool = False, status: int = 0, problem: dict[str, Any] | None = None):
        super().__init__(message)
        self.refused = refused
        self.status = status
        self.problem = problem or {}


@dataclass
class Profile:
    url: str
    access_token: str = ""
    refresh_token: str = ""
    expires_at: float = 0.0
    issuer: str = ""
    client_id: str = "antenna-cli"
    token_endpoint: str = ""


def config_dir() -> Path:
    """``ANTENNA_CLI_HOME`` if set, else the XDG config folder's ``antenna``."""
    if "ANTENNA_CLI_HOME" in os.environ:
        return Path(os.environ["ANTENNA_CLI_HOME"])
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "antenna"


def profile_path() -> Path:
    return config_dir() / "profile.json"


def save_profile(profile: Profile) -> Path:
    """Write the profile readable by its owner only (it holds tokens)."""
    path = profile_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(asdict(profile), handle)
    tmp.replace(path)
    path.chmod(0o600)
    return path


def forget_profile() -> bool:
    """Remove the stored profile (its tokens); True if there was one."""
    path = profile_path()
    if not path.exists():
        return False
    path.unlink()
    return True


def load_profile(url: str | None = None, token: str | None = None) -> Profile:
    """The stored profile, overridden by ``--url``/``ANTENNA_URL`` and ``ANTENNA_TOKEN``."""
    path = profile_path()
    profile = Profile(url="http://127.0.0.1:8000")
    if path.exists():
        try:
            profile = Profile(**json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            raise CliError(f"{path} is damaged ({exc}): run `antenna login` again", status=401) from exc
    if url:
        profile.url = url
    if token:
        profile.access_token, profile.refresh_token, profile.expires_at = token, "", 0.0
    return profile


def device_login(
    url: str,
    *,
    show: Callable[[str, str], None],
    http: httpx.Client | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Profile:
    """OAuth 2.0 device authorization grant (RFC 8628) against the issuer the gateway names."""
    import httpx

    client = http or httpx.Client(timeout=10)
    try:
        return _device_flow(client, url, show=show, sleep=sleep)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot complete the sign-in at {url}: {exc or type(exc).__name__}") from exc
    finally:
        if http is None:  # ours: close its connections
            client.close()


def _device_flow(
    client: httpx.Client, url: str, *, show: Callable[[str, str], None], sleep: Callable[[float], None]
) -> Profile:
    config = _json(client.get(f"{url.rstrip('/')}/.well-known/antenna-configuration"))
    issuer, client_id = config["issuer"], config["client_id"]
    discovery = _json(client.get(f"{issuer.rstrip('/')}/.well-known/openid-configuration"))
    if "device_authorization_endpoint" not in discovery:
        raise CliError(f"the issuer {issuer} offers no device authorization grant")
    start = _json(
        client.post(discovery["device_authorization_endpoint"], data={"client_id": client_id, "scope": "openid"})
    )
    show(start.get("verification_uri_complete") or start["verification_uri"], start["user_code"])
    interval = float(start.get("interval", 5))
    deadline = time.monotonic() + float(start.get("expires_in", 600))
    while time.monotonic() < deadline:
        sleep(interval)
        reply = client.post(
            discovery["token_endpoint"],
            data={"grant_type": DEVICE_GRANT, "device_code": start["device_code"], "client_id": client_id},
        )
        body = _json(reply) if reply.status_code == 200 else _error_body(reply)
        if reply.status_code == 200:
            return _profile_from_tokens(url, issuer, client_id, discovery["token_endpoint"], body)
        error = body.get("error")
        if error == "authorization_pending":
            continue
        if error == "slow_down":
            interval += 5
            continue
        raise CliError(f"sign-in failed: {error or reply.status_code}", refused=True)
    raise CliError("sign-in timed out: the code was not confirmed in time", refused=True)


def _error_body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _profile_from_tokens(url: str, issuer: str, client_id: str, token_endpoint: str, body: dict[str, Any]) -> Profile:
    return Profile(
        url=url,
        access_token=body["access_token"],
        refresh_token=body.get("refresh_token", ""),
        expires_at=time.time() + float(body.get("expires_in", 300)),
        issuer=issuer,
        client_id=client_id,
        token_endpoint=token_endpoint,
    )


def _json(response: httpx.Response) -> dict[str, Any]:
    if response.status_code >= 400:
        raise CliError(f"{response.request.url} answered {response.status_code}")
    try:
        data: dict[str, Any] = response.json()
    except ValueError as exc:
        raise CliError(f"{response.request.url} did not answer JSON: is it an Antenna gateway?") from exc
    return data


class ApiClient:
    """Calls the gateway; refreshes the access token shortly before it expires."""

    def __init__(self, profile: Profile, *, http: httpx.Client | None = None, persist: bool = True) -> None:
        import httpx

        self.profile = profile
        self.http = http or httpx.Client(base_url=profile.url, timeout=30)
        self._errors = httpx.HTTPError
        self.persist = persist

    def _token(self) -> str:
        p = self.profile
        if p.refresh_token and p.token_endpoint and p.expires_at - time.time() < 30:
            try:
                reply = self.http.post(
                    p.token_endpoint,
                    data={"grant_type": "refresh_token", "refresh_token": p.refresh_token, "client_id": p.client_id},
                )
            except self._errors as exc:
                raise CliError(f"cannot reach the identity provider to refresh your session: {exc}") from exc
            if reply.status_code != 200:
                raise CliError("your session has expired: run `antenna login`", status=401)
            self.profile = _profile_from_tokens(p.url, p.issuer, p.client_id, p.token_endpoint, _json(reply))
            if self.persist:
                save_profile(self.profile)
        if not self.profile.access_token:
            raise CliError("not signed in: run `antenna login`", status=401)
        return self.profile.access_token

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self._token()}", **kwargs.pop("headers", {})}
        try:
            response = self.http.request(method, path, headers=headers, **kwargs)
        except self._errors as exc:
            raise CliError(f"cannot reach the gateway at {self.profile.url}: {exc or type(exc).__name__}") from exc
        if response.status_code >= 400:
            problem = _error_body(response) or {"detail": response.text[:300]}
            detail = problem.get("detail") or problem.get("title") or response.reason_phrase
            raise CliError(
                str(detail), refused=400 <= response.status_code < 500, status=response.status_code, problem=problem
            )
        return response

    def close(self) -> None:
        self.http.close()

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise CliError(f"{self.profile.url} did not answer JSON: is it an Antenna gateway?") from exc
