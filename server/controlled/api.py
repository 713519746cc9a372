"""GraphQL and the HTTP exports of the controlled-drug register: thin, over
`server.controlled.service`."""

from __future__ import annotations

import asyncio
from datetime import date, datetime
from typing import TYPE_CHECKING, Annotated

import strawberry
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from strawberry import relay

from server.catalog import models as catalog_models
from server.catalog.api import Product
from server.controlled import export, service
from server.core.cost import weigh
from server.core.downloads import attachment, bearer_principal, download
from server.core.errors import InvalidInput
from server.core.graphql import Info, decode_id, relation
from server.inventory import models as inventory_models
from server.inventory.api import Movement, MovementKind
from server.network import models as network_models
from server.network.api import Location, Organisation, User

if TYPE_CHECKING:
    from server.services import Services


@strawberry.type(description="One line of a controlled-drug register: a movement and the balance.")
class ControlledRegisterEntry:
    kind: MovementKind = strawberry.field(description="What the movement did.")  # type: ignore[valid-type]
    quantity: int = strawberry.field(description="Packs, signed: + into stock, - out of it.")
    balance: int = strawberry.field(
        description="The product's running balance at the location right after it (all lots)."
    )
    batch_number: str = strawberry.field(description="The lot's batch number.")
    expiry_date: date = strawberry.field(description="The lot's expiry date.")
    reason: str | None = strawberry.field(description="Why (disposals, adjustments, counts).")
    reference: str | None = strawberry.field(
        description="What it belongs to: a transfer, shipment, count or order number."
    )
    patient_reference: str | None = strawberry.field(
        description="The patient encounter of a dispense; null when none, or hidden from you."
    )
    patient_reference_hidden: bool = strawberry.field(
        description="True when a patient reference exists but your role may not see it."
    )
    occurred_at: datetime = strawberry.field(description="When it happened.")
    recorded_at: datetime = strawberry.field(description="When the ledger recorded it.")
    movement_id: strawberry.Private[int]
    actor_id: strawberry.Private[int | None]
    witness_id: strawberry.Private[int | None]

    movement: Movement = relation(
        inventory_models.Movement,
        "movement_id",
        description="The ledger movement itself.",
    )
    recorded_by: User | None = relation(
        network_models.User, "actor_id", description="Who recorded it."
    )
    witnessed_by: User | None = relation(
        network_models.User,
        "witness_id",
        description="Who witnessed it (disposals, adjustments, count variances); null if none.",
    )

    @classmethod
    def from_entry(cls, entry: service.RegisterEntry) -> ControlledRegisterEntry:
        m = entry.movement
        return cls(
            kind=m.kind,
            quantity=m.quantity,
            balance=entry.balance,
            batch_number=entry.batch_number,
            expiry_date=entry.expiry_date,
            reason=m.reason,
            reference=m.reference,
            patient_reference=entry.patient_reference,
            patient_reference_hidden=entry.patient_reference_hidden,
            occurred_at=m.occurred_at,
            recorded_at=m.recorded_at,
            movement_id=m.id,
            actor_id=m.actor_id,
            witness_id=entry.witness_id,
        )


@strawberry.type(
    description="The register of one controlled product at one location over a period: "
    "opening balance, every movement oldest first with the running balance, closing balance."
)
class ControlledRegister:
    opening_balance: int = strawberry.field(description="Balance before the period's start.")
    closing_balance: int = strawberry.field(description="Balance after its last movement.")
    period_from: date | None = strawberry.field(description="First day (UTC); null: the start.")
    period_to: date | None = strawberry.field(description="Last day (UTC, inclusive); null: now.")
    generated_at: datetime = strawberry.field(description="When this register was read.")
    entries: list[ControlledRegisterEntry] = strawberry.field(
        description=f"Every movement, oldest first (at most {service.MAX_REGISTER_ENTRIES:,})."
    )
    product_id: strawberry.Private[int]
    location_id: strawberry.Private[int]
    organisation_id: strawberry.Private[int]

    product: Product = relation(
        catalog_models.Product, "product_id", description="The controlled product."
    )
    location: Location = relation(
        network_models.Location, "location_id", description="Where its stock is held."
    )
    organisation: Organisation = relation(
        network_models.Organisation, "organisation_id", description="Who holds it."
    )

    @classmethod
    def from_register(cls, register: service.Register) -> ControlledRegister:
        return cls(
            opening_balance=register.opening_balance,
            closing_balance=register.closing_balance,
            period_from=register.since,
            period_to=register.until,
            generated_at=register.generated_at,
            entries=[ControlledRegisterEntry.from_entry(e) for e in register.entries],
            product_id=register.product.id,
            location_id=register.location.id,
            organisation_id=register.organisation.id,
        )


@strawberry.type
class Query:
    @strawberry.field(
        description="The controlled-drug register of a product at a location (STOCK_READ "
        "there): every movement with its running balance, who recorded and who witnessed it, "
        "why, and the patient reference of dispenses. CSV and PDF: GET "
        "/reports/controlled-register.csv and .pdf with the same arguments.",
        metadata=weigh(200),
    )
    async def controlled_register(
        self,
        info: Info,
        product: Annotated[
            relay.GlobalID, strawberry.argument(description="A controlled product.")
        ],
        location: Annotated[
            relay.GlobalID, strawberry.argument(description="The location (in your scope).")
        ],
        from_: Annotated[
            date | None,
            strawberry.argument(name="from", description="First day (UTC); null: from the start."),
        ] = None,
        to: Annotated[
            date | None,
            strawberry.argument(description="Last day (UTC, inclusive); null: up to now."),
        ] = None,
    ) -> ControlledRegister:
        register = await info.context.services.controlled.register(
            info.context.require_principal(),
            decode_id(product, Product, "product"),
            decode_id(location, Location, "location"),
            from_,
            to,
        )
        return ControlledRegister.from_register(register)


# --- HTTP exports ------------------------------------------------------------------------------


def _day(request: Request, name: str) -> date | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be a date like 2026-12-01", field=name) from None


def export_routes(services: Services) -> list[Route]:
    """GET /reports/controlled-register.csv and .pdf?product=&location=&from=&to=, signed in
    with `Authorization: Bearer <access token>` like /graphql, the same scope rules."""

    async def read(request: Request) -> tuple[service.Register, dict[int, str]]:
        principal = await bearer_principal(services.network, request)
        register = await services.controlled.register(
            principal,
            decode_id(request.query_params.get("product", ""), Product, "product"),
            decode_id(request.query_params.get("location", ""), Location, "location"),
            _day(request, "from"),
            _day(request, "to"),
        )
        people = {e.movement.actor_id for e in register.entries if e.movement.actor_id}
        people |= {e.witness_id for e in register.entries if e.witness_id}
        return register, await services.controlled.usernames(people)

    def filename(register: service.Register, suffix: str) -> str:
        return (
            f"controlled-register-{register.location.code}-{register.product.id}-"
            f"{register.generated_at:%Y%m%d}.{suffix}"
        )

    @download
    async def as_csv(request: Request) -> Response:
        register, names = await read(request)
        csv = export.register_csv(register, names)
        return attachment(csv, "text/csv; charset=utf-8", filename(register, "csv"))

    @download
    async def as_pdf(request: Request) -> Response:
        register, names = await read(request)
        pdf = await asyncio.to_thread(export.register_pdf, register, names)  # CPU: off the loop
        return attachment(pdf, "application/pdf", filename(register, "pdf"))

    return [
        Route("/reports/controlled-register.csv", as_csv, methods=["GET"]),
        Route("/reports/controlled-register.pdf", as_pdf, methods=["GET"]),
    ]
