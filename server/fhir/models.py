"""What the FHIR endpoint remembers: each MedicationDispense by its identifier, with the
movements it became, so a replay changes nothing and entered-in-error can reverse it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base, UTCDateTime, utcnow


class FhirDispense(Base):
    """One MedicationDispense (by `identifier`, "system|value"): DISPENSE movements, and the
    RETURN movements that reversed them once it was marked entered-in-error."""

    __tablename__ = "fhir_dispenses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    identifier: Mapped[str] = mapped_column(String(300), unique=True)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    location_id: Mapped[int | None] = mapped_column(ForeignKey("locations.id"), index=True)
    status: Mapped[str] = mapped_column(String(20))  # completed | entered-in-error
    content_hash: Mapped[str] = mapped_column(String(64))
    patient_reference: Mapped[str | None] = mapped_column(String(100), index=True)
    encounter_reference: Mapped[str | None] = mapped_column(String(100))
    movement_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    reversal_movement_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    resource: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
