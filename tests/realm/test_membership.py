"""`add_member` / `remove_member` against Keycloak admin API replies recorded as data files (tests/realm/data).

No Keycloak server can run on these machines: a real local HTTP server answers with replies in the shape of
Keycloak 26's documented admin REST API, applies the group-membership writes (PUT/DELETE
/users/{id}/groups/{groupId}) to what it serves next, and logs every request.
"""

from __future__ import annotations

import pytest
from keycloak import KeycloakAdmin

from gateway.errors import Conflict, Forbidden, InvalidRequest, NotFound
from gateway.realm import MembershipChange, add_member, remove_member
from tests.realm.keycloak_replay import Replay

A = "/admin/realms/antenna"
RESEARCHER = "3fa85f6457174562b3fc2c963f66afa6c1e2d4b5@myaccessid.org"
RESEARCHER_ID = "c3000000-0000-4000-8000-000000000001"
PI = "9e107d9d372bb6826bd81d3542a419d6e8b1c2a3@myaccessid.org"
PI_ID = "c3000000-0000-4000-8000-000000000002"
PILOT = "f2000000-0000-4000-8000-000000000004"
PILOT_PI = "f2000000-0000-4000-8000-000000000005"


def groups_of(replay: Replay, user_id: str) -> list[str]:
    return sorted(g["path"] for g in replay.replies[f"GET {A}/users/{user_id}/groups"])


def test_add_member_puts_the_person_in_the_project_group(admin: KeycloakAdmin, replay: Replay) -> None:
    change = add_member(admin, RESEARCHER, "antenna-pilot")
    assert change == MembershipChange(person=RESEARCHER, project="antenna-pilot", added=("/projects/antenna-pilot",))
    assert replay.writes()[1:] == [("PUT", f"PUT {A}/users/{RESEARCHER_ID}/groups/{PILOT}")]
    assert groups_of(replay, RESEARCHER_ID) == ["/projects/antenna-pilot"]


def test_add_member_as_pi_adds_both_groups(admin: KeycloakAdmin, replay: Replay) -> None:
    change = add_member(admin, RESEARCHER, "antenna-pilot", pi=True)
    assert change.added == ("/projects/antenna-pilot", "/projects/antenna-pilot/pi")
    assert groups_of(replay, RESEARCHER_ID) == ["/projects/antenna-pilot", "/projects/antenna-pilot/pi"]


def test_adding_again_changes_nothing(admin: KeycloakAdmin, replay: Replay) -> None:
    add_member(admin, RESEARCHER, "antenna-pilot")
    writes = len(replay.writes())
    change = add_member(admin, RESEARCHER, "antenna-pilot")
    assert not change.changed
    assert len(replay.writes()) == writes


def test_person_identifiers_are_compared_case_insensitively(admin: KeycloakAdmin, replay: Replay) -> None:
    change = add_member(admin, f"  {RESEARCHER.upper()} ", "antenna-pilot")
    assert change.person == RESEARCHER
    assert groups_of(replay, RESEARCHER_ID) == ["/projects/antenna-pilot"]


def test_remove_member_takes_the_person_out_of_both_groups(admin: KeycloakAdmin, replay: Replay) -> None:
    change = remove_member(admin, PI, "antenna-pilot")
    assert change.removed == ("/projects/antenna-pilot/pi", "/projects/antenna-pilot")
    assert groups_of(replay, PI_ID) == []


def test_remove_pi_only_keeps_the_membership(admin: KeycloakAdmin, replay: Replay) -> None:
    change = remove_member(admin, PI, "antenna-pilot", pi=True)
    assert change.removed == ("/projects/antenna-pilot/pi",)
    assert replay.writes()[1:] == [("DELETE", f"DELETE {A}/users/{PI_ID}/groups/{PILOT_PI}")]
    assert groups_of(replay, PI_ID) == ["/projects/antenna-pilot"]


def test_removing_a_non_member_changes_nothing(admin: KeycloakAdmin, replay: Replay) -> None:
    change = remove_member(admin, RESEARCHER, "antenna-pilot")
    assert not change.changed
    assert replay.writes()[1:] == []


def test_projects_managed_by_entitlements_are_refused(admin: KeycloakAdmin, replay: Replay) -> None:
    with pytest.raises(Conflict, match="entitlements"):
        add_member(admin, RESEARCHER, "ai4belgium")
    with pytest.raises(Conflict, match="entitlements"):
        remove_member(admin, RESEARCHER, "ai4belgium")
    assert replay.writes()[1:] == []


def test_unknown_project(admin: KeycloakAdmin) -> None:
    with pytest.raises(NotFound, match="/projects/nowhere"):
        add_member(admin, RESEARCHER, "nowhere")


def test_person_who_never_signed_in(admin: KeycloakAdmin, replay: Replay) -> None:
    with pytest.raises(NotFound, match="first sign-in"):
        add_member(admin, "0000aaaa@myaccessid.org", "antenna-pilot")
    assert replay.writes()[1:] == []


def test_the_myaccessid_test_account_is_never_added(admin: KeycloakAdmin, replay: Replay) -> None:
    with pytest.raises(Forbidden, match="test account"):
        add_member(admin, "Test@MyAccessID.org", "antenna-pilot")
    assert replay.log == []


@pytest.mark.parametrize(
    ("person", "project", "field"),
    [
        ("", "antenna-pilot", "person"),
        ("a b@x", "p", "person"),
        (RESEARCHER, "../admin", "project"),
        (RESEARCHER, "Pilot", "project"),
    ],
)
def test_invalid_names(admin: KeycloakAdmin, person: str, project: str, field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        add_member(admin, person, project)
    assert caught.value.field == field


def test_an_admin_client_without_manage_rights_is_refused(admin: KeycloakAdmin, replay: Replay) -> None:
    replay.refuse_writes = True
    with pytest.raises(Forbidden, match="HTTP 403"):
        add_member(admin, RESEARCHER, "antenna-pilot")
    assert groups_of(replay, RESEARCHER_ID) == []
