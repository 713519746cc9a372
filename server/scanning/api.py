"""GraphQL for scanning: `parseBarcode` previews what a pack's barcode means, `recordScan`
acts on it (dispense, receive, return, dispose, or COUNT, which records nothing)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from typing import Annotated, Self

import strawberry
from strawberry import relay

from server.catalog.api import Lot, Product
from server.core.db import utcnow
from server.core.graphql import (
    Info,
    MutationError,
    attempt,
    decode_id,
    optional_id,
    request_ip,
)
from server.core.graphql_enums import described_enum
from server.core.security import Principal, WitnessCredentials
from server.inventory.api import Movement, WitnessInput
from server.network.api import Location
from server.scanning import gs1, service

ScanAction = described_enum(
    service.ScanAction,
    "What the scan does. COUNT records nothing: it returns what the system holds of the lot at "
    "the location, for the person counting (stock-takes have their own API).",
    DISPENSE="Issue the pack to a patient (a DISPENSE movement).",
    RECEIVE="Take the pack into stock at the location (a RECEIVE movement).",
    RETURN="A patient's unused pack comes back into stock (a RETURN movement).",
    DISPOSE="Take the pack out of stock as waste; needs a reason (a DISPOSE movement).",
    COUNT="Record nothing: answer what the system holds of the lot here.",
)
BarcodeSymbology = described_enum(
    gs1.BarcodeSymbology,
    "How the pack's data reached us: the scanner's symbology identifier, else the text's form.",
    GS1_DATAMATRIX="A GS1 DataMatrix (symbology identifier ]d2), the usual medicine pack code.",
    GS1_128="A GS1-128 linear barcode (]C1).",
    GS1_QR="A GS1 QR Code (]Q3).",
    GS1_DATABAR="A GS1 DataBar (]e0).",
    GS1_ELEMENT_STRING="GS1 element strings without a symbology identifier.",
    GS1_HUMAN_READABLE="The human-readable form, (01)...(17)..., as printed under a code.",
    GS1_DIGITAL_LINK="A GS1 Digital Link URI (https://.../01/<GTIN>/10/<batch>...).",
    EAN_13="An EAN-13: a GTIN-13 alone, no batch or expiry.",
    EAN_8="An EAN-8: a GTIN-8 alone.",
    UPC_A="A UPC-A: a GTIN-12 alone.",
    UPC_E="A UPC-E: a zero-suppressed GTIN-12 alone.",
    GTIN_14="Fourteen digits typed or scanned without any GS1 application identifier.",
)


@strawberry.type(
    description="What a barcode means: the pack it identifies, and the product and lot here. "
    "`valid` is false when `errors` says what is wrong (unreadable barcode, unknown GTIN, "
    "expiry that disagrees with the recorded lot). An unknown batch is not an error here: "
    "`lot` is null until the batch is received."
)
class BarcodeParse:
    valid: bool = strawberry.field(description="False when `errors` says what is wrong.")
    errors: list[MutationError] = strawberry.field(
        description="What is wrong with the barcode or the pack; empty when valid."
    )
    symbology: BarcodeSymbology | None = strawberry.field(  # type: ignore[valid-type]
        description="How the data reached us; null when unreadable."
    )
    gtin: str | None = strawberry.field(description="As GTIN-14.")
    ndc: str | None = strawberry.field(description="US NDC-10 carried in a GTIN starting 003.")
    batch_number: str | None = strawberry.field(description="The batch (lot) number, AI (10).")
    expiry_date: date | None = strawberry.field(description="As printed on the barcode.")
    serial: str | None = strawberry.field(description="The pack's serial number, AI (21).")
    product: Product | None = strawberry.field(
        description="The catalogue product with this GTIN; null when unknown."
    )
    lot: Lot | None = strawberry.field(
        description="The recorded lot of this product and batch; null until it is received."
    )
    expired: bool | None = strawberry.field(
        description="Of the lot when known, else of the barcode's expiry date."
    )
    days_to_expiry: int | None = strawberry.field(
        description="Days from today (UTC) to the expiry date; negative once expired."
    )
    quantity_on_hand: int | None = strawberry.field(
        description="At the location asked about: of the lot, or of the product without a batch."
    )

    @classmethod
    def from_preview(cls, preview: service.ScanPreview) -> Self:
        pack = preview.pack
        expiry = preview.lot.expiry_date if preview.lot else pack.expiry_date if pack else None
        today = utcnow().date()
        return cls(
            valid=not preview.problems,
            errors=[MutationError.from_domain(e) for e in preview.problems],
            symbology=pack.symbology if pack else None,
            gtin=pack.gtin if pack else None,
            ndc=pack.ndc if pack else None,
            batch_number=pack.batch_number if pack else None,
            expiry_date=pack.expiry_date if pack else None,
            serial=pack.serial if pack else None,
            product=Product.from_model(preview.product) if preview.product else None,
            lot=Lot.from_model(preview.lot) if preview.lot else None,
            expired=expiry < today if expiry else None,
            days_to_expiry=(expiry - today).days if expiry else None,
            quantity_on_hand=preview.quantity_on_hand,
        )


@strawberry.input(description="One scan of a pack; replays with the same key change nothing.")
class RecordScanInput:
    barcode: str = strawberry.field(
        description="Raw scanner text: GS1 element strings (GS as \\x1d, <GS> or |, with or "
        "without ]d2), (01)...(17)... text, a GS1 Digital Link URI, or an EAN/UPC/GTIN."
    )
    location: relay.GlobalID = strawberry.field(description="Where the pack was scanned.")
    action: ScanAction = strawberry.field(  # type: ignore[valid-type]
        description="What to do with the pack."
    )
    idempotency_key: str = strawberry.field(
        description="The client's key for this scan (≤ 100): a replay returns the first answer."
    )
    quantity: int = strawberry.field(default=1, description="Packs; 1 for a serialised pack.")
    patient_reference: str | None = strawberry.field(
        default=None, description="The patient's reference for DISPENSE or RETURN (≤ 100)."
    )
    reason: str | None = strawberry.field(default=None, description="Required for DISPOSE.")
    witness: WitnessInput | None = strawberry.field(
        default=None,
        description="DISPOSE of a controlled drug: a second person (pharmacist or nurse of the "
        "same organisation) re-enters their password (WITNESS_REQUIRED without it). Send such a "
        "scan directly, never from an offline queue that would store the password.",
    )


@strawberry.type(description="The result of recordScan.")
class ScanPayload:
    scan: BarcodeParse | None = strawberry.field(
        default=None, description="What the barcode meant (also on refusals, when readable)."
    )
    movements: list[Movement] = strawberry.field(
        default_factory=list, description="The ledger movements the scan wrote (none for COUNT)."
    )
    replayed: bool = strawberry.field(
        default=False, description="True when this idempotency key was already processed."
    )
    errors: list[MutationError] = strawberry.field(
        default_factory=list, description="Why the scan was refused; empty on success."
    )


@strawberry.type
class Query:
    @strawberry.field(description="Preview a scan: what the barcode means, nothing recorded.")
    async def parse_barcode(
        self,
        info: Info,
        barcode: Annotated[
            str, strawberry.argument(description="Raw scanner text, as for recordScan.")
        ],
        location: Annotated[
            relay.GlobalID | None,
            strawberry.argument(description="Where it was scanned, for quantityOnHand."),
        ] = None,
    ) -> BarcodeParse:
        principal = info.context.require_principal()
        location_id = optional_id(location, Location, "location")
        preview = await info.context.services.scanning.preview(
            principal, barcode, location_id=location_id
        )
        return BarcodeParse.from_preview(preview)


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Act on a scanned pack through the ledger.")
    async def record_scan(self, info: Info, input: RecordScanInput) -> ScanPayload:
        scanning = info.context.services.scanning

        def command() -> service.ScanCommand:
            return service.ScanCommand(
                barcode=input.barcode,
                location_id=decode_id(input.location, Location, "location"),
                action=service.ScanAction(input.action),
                idempotency_key=input.idempotency_key,
                quantity=input.quantity,
                patient_reference=input.patient_reference,
                reason=input.reason,
            )

        async def record(principal: Principal) -> service.ScanResult:
            scan = command()
            if input.witness is not None:
                witness_id = await info.context.services.controlled.verify_witness(
                    principal,
                    scan.location_id,
                    WitnessCredentials(input.witness.username, input.witness.password),
                    request_ip(info),
                )
                scan = replace(scan, witness_id=witness_id)
            return await scanning.record(principal, scan)

        result: service.ScanResult | None
        result, errors = await attempt(info, record)
        if result is not None:
            return ScanPayload(
                scan=BarcodeParse.from_preview(result.scan),
                movements=[Movement.from_model(m) for m in result.movements],
                replayed=result.replayed,
            )
        # Refused: still say what the barcode meant, when the caller may read the catalogue.
        preview, _ = await attempt(info, lambda p: scanning.preview(p, input.barcode))
        scan = BarcodeParse.from_preview(preview) if preview is not None else None
        return ScanPayload(scan=scan, errors=errors)
