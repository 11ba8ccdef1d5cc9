"""Keycloak's admin REST API through python-keycloak, with its errors translated into the project's own."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from keycloak import KeycloakAdmin
from keycloak.exceptions import (
    KeycloakAuthenticationError,
    KeycloakConnectionError,
    KeycloakError,
)

from gateway.errors import AntennaError, Forbidden, NotFound, SiteUnavailable

T = TypeVar("T")


class KeycloakUnavailable(SiteUnavailable):
    """Keycloak's admin API cannot be reached."""


def connect_admin(
    server_url: str,
    *,
    client_id: str,
    client_secret: str,
    realm: str = "antenna",
    admin_realm: str = "master",
    verify: bool | str = True,
    timeout: int = 10,
) -> KeycloakAdmin:
    """An admin client acting on `realm`, authenticated with a service-account client of `admin_realm`.

    Nothing is requested until the first call (python-keycloak fetches its token lazily).
    """
    return KeycloakAdmin(
        server_url=server_url,
        realm_name=realm,
        user_realm_name=admin_realm,
        client_id=client_id,
        client_secret_key=client_secret,
        grant_type="client_credentials",
        verify=verify,
        timeout=timeout,
    )


def call(what: str, fn: Callable[..., T], *args: Any, missing: T | None = None) -> T:
    """Run one admin call. A 404 returns `missing` when given, else raises NotFound naming `what`.

    The messages never carry the response body: Keycloak may echo request data in it.
    """
    try:
        return fn(*args)
    except KeycloakConnectionError as exc:
        raise KeycloakUnavailable(f"Keycloak cannot be reached while reading {what}") from exc
    except KeycloakAuthenticationError as exc:
        raise Forbidden("Keycloak refused the admin client's credentials") from exc
    except KeycloakError as exc:
        code = exc.response_code
        if code == 404:
            if missing is not None:
                return missing
            raise NotFound(f"{what} does not exist in Keycloak") from exc
        if code in (401, 403):
            raise Forbidden(f"the admin client may not read or change {what} (HTTP {code})") from exc
        if code is not None and code >= 500:
            raise KeycloakUnavailable(f"Keycloak failed while handling {what} (HTTP {code})") from exc
        raise AntennaError(f"Keycloak refused the request on {what} (HTTP {code})") from exc
