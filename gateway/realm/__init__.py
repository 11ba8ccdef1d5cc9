"""Keycloak at run time: check the live `antenna` realm against the identity contract; change project membership.

Everything goes through Keycloak's admin REST API with python-keycloak (`connect_admin`).
"""

from gateway.realm.admin import KeycloakUnavailable, connect_admin
from gateway.realm.check import check_realm
from gateway.realm.contract import Difference, RealmContract
from gateway.realm.membership import MembershipChange, add_member, remove_member

__all__ = [
    "Difference",
    "KeycloakUnavailable",
    "MembershipChange",
    "RealmContract",
    "add_member",
    "check_realm",
    "connect_admin",
    "remove_member",
]
