"""HL7 FHIR R4 for health records: MedicationDispense in (DISPENSE / RETURN), search out."""
