"""`antenna project add-member / remove-member`: a person in or out of a project's Keycloak groups.

Membership is the groups `/projects/<project>` (member) and `/projects/<project>/pi` (principal investigator)
that reach the gateway in the `groups` claim. Projects whose membership MyAccessID entitlements decide are
refused: with FORCE sync Keycloak would undo the change at the person's next sign-in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from keycloak import KeycloakAdmin

from gateway.errors import Conflict, Forbidden, InvalidRequest, NotFound
from gateway.realm.admin import call
from gateway.realm.contract import RealmContract

_PROJECT = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_GROUP_MAPPERS = {"oidc-advanced-group-idp-mapper", "oidc-hardcoded-group-idp-mapper"}


@dataclass(frozen=True)
class MembershipChange:
    """What a call changed: group paths joined or left (empty when the person already was as asked)."""

    person: str
    project: str
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)


def _person(person: str, contract: RealmContract) -> str:
    # Keycloak stores usernames (MyAccessID identifiers) lower-cased; MyAccessID compares them case-insensitively.
    key = person.strip().lower()
    if not key or any(ch.isspace() for ch in key):
        raise InvalidRequest("a person is their MyAccessID identifier, e.g. 1a2b…@myaccessid.org", field="person")
    if key == contract.test_account:
        raise Forbidden(f"{contract.test_account} is MyAccessID's test account and is never authorised")
    return key


def _project_paths(project: str, contract: RealmContract) -> tuple[str, str]:
    if not _PROJECT.match(project):
        raise InvalidRequest(f"{project!r} is not a project name ({_PROJECT.pattern})", field="project")
    path = f"{contract.projects_group}/{project}"
    return path, f"{path}/pi"


def _group(admin: KeycloakAdmin, path: str) -> dict[str, Any]:
    group: dict[str, Any] = call(f"group {path}", admin.get_group_by_path, path, missing={})
    if not group:
        raise NotFound(f"no group {path} in the realm: declare the project in the stack configuration and deploy")
    return group


def _refuse_entitlement_managed(admin: KeycloakAdmin, paths: tuple[str, str], contract: RealmContract) -> None:
    mappers: list[dict[str, Any]] = call(
        f"mappers of {contract.idp_alias}", admin.get_idp_mappers, contract.idp_alias, missing=[]
    )
    for mapper in mappers:
        group = (mapper.get("config") or {}).get("group")
        if mapper.get("identityProviderMapper") in _GROUP_MAPPERS and group in paths:
            raise Conflict(
                f"membership of {paths[0]} comes from MyAccessID entitlements (mapper {mapper.get('name')!r}); "
                "change the entitlement at the project's community instead: a change here would be undone "
                "at the person's next sign-in"
            )


def _user(admin: KeycloakAdmin, person: str) -> dict[str, Any]:
    users = call("users", admin.get_users, {"username": person, "exact": True})
    # `exact` still matches case-insensitively on some versions: compare ourselves.
    for user in users:
        if str(user.get("username", "")).lower() == person:
            return dict(user)
    raise NotFound(
        f"no account {person} in the realm: a person's account appears at their first sign-in through "
        "MyAccessID (refused while they are in no project, but the account is created)"
    )


def _current_paths(admin: KeycloakAdmin, user_id: str, person: str) -> set[str]:
    return {str(g.get("path")) for g in call(f"groups of {person}", admin.get_user_groups, user_id)}


def add_member(
    admin: KeycloakAdmin, person: str, project: str, pi: bool = False, contract: RealmContract | None = None
) -> MembershipChange:
    """Put `person` in the project (and, with `pi`, in its PI group). Idempotent.

    Raises InvalidRequest (bad name), Forbidden (test account, or the admin client may not), NotFound
    (no such project group or person), Conflict (membership decided by MyAccessID entitlements).
    """
    c = contract or RealmContract()
    key = _person(person, c)
    paths = _project_paths(project, c)
    wanted = [paths[0], paths[1]] if pi else [paths[0]]
    groups = {path: _group(admin, path) for path in wanted}
    _refuse_entitlement_managed(admin, paths, c)
    user = _user(admin, key)
    current = _current_paths(admin, user["id"], key)
    added = []
    for path in wanted:
        if path not in current:
            call(f"membership of {key} in {path}", admin.group_user_add, user["id"], groups[path]["id"])
            added.append(path)
    return MembershipChange(person=key, project=project, added=tuple(added))


def remove_member(
    admin: KeycloakAdmin, person: str, project: str, pi: bool = False, contract: RealmContract | None = None
) -> MembershipChange:
    """Take `person` out of the project and its PI group; with `pi`, out of the PI group only. Idempotent.

    Raises as `add_member` does.
    """
    c = contract or RealmContract()
    key = _person(person, c)
    paths = _project_paths(project, c)
    leaving = [paths[1]] if pi else [paths[1], paths[0]]
    groups = {path: _group(admin, path) for path in leaving}
    _refuse_entitlement_managed(admin, paths, c)
    user = _user(admin, key)
    current = _current_paths(admin, user["id"], key)
    removed = []
    for path in leaving:
        if path in current:
            call(f"membership of {key} in {path}", admin.group_user_remove, user["id"], groups[path]["id"])
            removed.append(path)
    return MembershipChange(person=key, project=project, removed=tuple(removed))
