"""Who may see what of a person: pure rules, no I/O."""

from __future__ import annotations

from server.core.errors import Forbidden
from server.core.security import Permission, Principal


def require_user_details(principal: Principal, user_id: int) -> None:
    """Anyone signed in sees who did something (username and full name); an account's state,
    roles, scope and organisation are for the user themself and for administrators."""
    if principal.user_id != user_id and not principal.can(Permission.USERS_MANAGE):
        raise Forbidden("only administrators see another user's account details")
