"""Who sees and acts on supplier documents (contracts, purchase orders, shipments): the parties
to them. ADMIN, AUDITOR and REGULATOR see everything; everyone else sees what their organisation
is a party to, and is told FORBIDDEN (never an empty answer) about the rest."""

from __future__ import annotations

from typing import Any

from sqlalchemy import false, or_

from server.core.errors import Forbidden
from server.core.security import Permission, Principal, Role
from server.network.models import OrganisationKind

SUPPLIER_KINDS = frozenset(
    {OrganisationKind.MANUFACTURER, OrganisationKind.WHOLESALER, OrganisationKind.SUPPLIER}
)


def sees_everything(principal: Principal) -> bool:
    """ADMIN, AUDITOR and REGULATOR are not confined to an organisation."""
    return principal.location_ids is None


def sees_parties(principal: Principal, *organisation_ids: int | None) -> bool:
    return sees_everything(principal) or (
        principal.organisation_id is not None and principal.organisation_id in organisation_ids
    )


def supplier_only(principal: Principal) -> bool:
    """A supplier's user or client: it sees its own organisation's supplier record only."""
    return not sees_everything(principal) and not principal.can(Permission.ORDER_MANAGE)


def require_supplier_visible(principal: Principal, supplier_id: int) -> None:
    principal.require(Permission.PROCUREMENT_READ)
    if supplier_only(principal) and principal.organisation_id != supplier_id:
        raise Forbidden("a supplier sees only its own supplier record", field="supplier")


def require_party(principal: Principal, organisation_id: int, role: str, what: str) -> None:
    """Only the named party (or an ADMIN acting for it) may make this change."""
    if Role.ADMIN in principal.roles or principal.organisation_id == organisation_id:
        return
    raise Forbidden(f"only the {role} may {what}")


def visible_parties_clause(principal: Principal, *columns: Any) -> Any:
    """SQL filter: rows where the principal's organisation is one of the parties (None: all)."""
    if sees_everything(principal):
        return None
    if principal.organisation_id is None:
        return false()
    return or_(*(c == principal.organisation_id for c in columns))
