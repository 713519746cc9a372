"""Seed data for the demo hospital network.

Demos, local development and benchmarks need a realistic drug catalogue: real generic
(INN) names and strengths, correct WHO ATC codes, valid GS1 GTIN-14 barcodes, some
controlled and cold-chain products, and per-product demand profiles for the stock
simulator. Everything here is pure data; ``demo_products_csv_rows`` renders it in the
``apotheca import-catalog`` CSV format.
"""

from dataclasses import dataclass
from typing import Literal

from server.catalog.service import CSV_COLUMNS
from server.core.gs1 import with_check_digit

DemandPattern = Literal["STEADY_WEEKLY", "SEASONAL_WINTER", "SEASONAL_SUMMER", "INTERMITTENT"]
Storage = Literal["ROOM", "REFRIGERATED", "FROZEN"]

CSV_FIELDS = CSV_COLUMNS  # the `apotheca import-catalog` format


def make_gtin14(body13: str) -> str:
    """Return the GTIN-14 made of a 13-digit body plus its check digit."""
    if len(body13) != 13 or not body13.isdigit():
        raise ValueError(f"GTIN-14 body must be exactly 13 digits: {body13!r}")
    return with_check_digit(body13)


@dataclass(frozen=True)
class DemandProfile:
    """How a product is consumed in a typical 3-ward hospital."""

    pattern: DemandPattern
    mean_daily_packs: float


@dataclass(frozen=True)
class DemoProduct:
    """One catalogue entry of the demo network."""

    name: str
    strength: str
    dosage_form: str
    unit: str
    atc_code: str
    approval_number: str
    gtin_bodies: tuple[str, ...]
    controlled_schedule: str | None
    storage: Storage
    unit_cost: str
    demand: DemandProfile

    @property
    def critical(self) -> bool:
        """Life-saving with no ready substitute (see CRITICAL_APPROVALS)."""
        return self.approval_number in CRITICAL_APPROVALS


# The emergency antidotes and resuscitation drugs, and insulin: a ward without them cannot wait
# for the next delivery, so replenishment keeps them at the CRITICAL service level.
CRITICAL_APPROVALS = frozenset(
    {
        "MA-2012-02633",  # naloxone
        "MA-2011-02867",  # epinephrine (adrenaline)
        "MA-2011-02852",  # atropine
        "MA-2014-02761",  # flumazenil
        "MA-2019-00814",  # insulin glargine
    }
)

_PREFIX = "07612345"  # "0" indicator/filler + demo company prefix 7612345


def _g(*item_refs: str) -> tuple[str, ...]:
    """Build 13-digit GTIN bodies from 5-digit item references."""
    return tuple(_PREFIX + ref for ref in item_refs)


def _steady(mean: float) -> DemandProfile:
    return DemandProfile("STEADY_WEEKLY", mean)


def _winter(mean: float) -> DemandProfile:
    return DemandProfile("SEASONAL_WINTER", mean)


def _summer(mean: float) -> DemandProfile:
    return DemandProfile("SEASONAL_SUMMER", mean)


def _rare(mean: float) -> DemandProfile:
    return DemandProfile("INTERMITTENT", mean)


# fmt: off
DEMO_PRODUCTS: tuple[DemoProduct, ...] = (
    # --- Analgesics -------------------------------------------------------------------
    DemoProduct(
        "Paracetamol", "500 mg", "tablet", "pack of 20", "N02BE01", "MA-2015-00112",
        _g("00010", "00011"), None, "ROOM", "1.85", _steady(14.0),
    ),
    DemoProduct(
        "Paracetamol", "10 mg/ml", "solution for infusion", "vial 100 ml", "N02BE01",
        "MA-2017-00348", _g("00020"), None, "ROOM", "2.40", _steady(9.0),
    ),
    DemoProduct(
        "Ibuprofen", "400 mg", "tablet", "pack of 30", "M01AE01", "MA-2014-00871",
        _g("00030"), None, "ROOM", "2.95", _steady(6.5),
    ),
    DemoProduct(
        "Diclofenac", "75 mg/3 ml", "solution for injection", "ampoule", "M01AB05",
        "MA-2012-01533", _g("00040"), None, "ROOM", "0.95", _steady(4.0),
    ),
    DemoProduct(
        "Metamizole sodium", "500 mg", "tablet", "pack of 20", "N02BB02", "MA-2016-00604",
        _g("00050"), None, "ROOM", "3.10", _steady(5.5),
    ),
    # --- Opioids (controlled) ---------------------------------------------------------
    DemoProduct(
        "Morphine sulfate", "10 mg/ml", "solution for injection", "ampoule", "N02AA01",
        "MA-2011-02210", _g("00060", "00061"), "II", "ROOM", "1.60", _steady(5.0),
    ),
    DemoProduct(
        "Oxycodone hydrochloride", "10 mg", "prolonged-release tablet", "pack of 28",
        "N02AA05", "MA-2018-00457", _g("00070"), "II", "ROOM", "24.50", _steady(1.2),
    ),
    DemoProduct(
        "Fentanyl", "25 micrograms/hour", "transdermal patch", "pack of 5", "N02AB03",
        "MA-2016-01982", _g("00080"), "II", "ROOM", "31.80", _steady(0.6),
    ),
    DemoProduct(
        "Tramadol hydrochloride", "50 mg", "capsule", "pack of 20", "N02AX02",
        "MA-2013-00769", _g("00090"), "IV", "ROOM", "4.25", _steady(3.0),
    ),
    # --- Benzodiazepines (controlled) -------------------------------------------------
    DemoProduct(
        "Diazepam", "5 mg", "tablet", "pack of 20", "N05BA01", "MA-2010-01104",
        _g("00100"), "IV", "ROOM", "2.10", _steady(1.5),
    ),
    DemoProduct(
        "Midazolam", "5 mg/ml", "solution for injection", "ampoule", "N05CD08",
        "MA-2014-02036", _g("00110"), "IV", "ROOM", "1.35", _steady(3.5),
    ),
    DemoProduct(
        "Lorazepam", "1 mg", "tablet", "pack of 20", "N05BA06", "MA-2012-00388",
        _g("00120"), "IV", "ROOM", "3.40", _steady(1.0),
    ),
    # --- Antibiotics ------------------------------------------------------------------
    DemoProduct(
        "Amoxicillin", "500 mg", "capsule", "pack of 21", "J01CA04", "MA-2015-01247",
        _g("00130"), None, "ROOM", "3.60", _winter(4.0),
    ),
    DemoProduct(
        "Amoxicillin/clavulanic acid", "875 mg/125 mg", "tablet", "pack of 14", "J01CR02",
        "MA-2017-00912", _g("00140", "00141"), None, "ROOM", "8.90", _steady(3.5),
    ),
    DemoProduct(
        "Ceftriaxone", "1 g", "powder for solution for injection", "vial", "J01DD04",
        "MA-2016-00233", _g("00150"), None, "ROOM", "2.75", _steady(8.0),
    ),
    DemoProduct(
        "Cefuroxime", "1.5 g", "powder for solution for injection", "vial", "J01DC02",
        "MA-2015-02118", _g("00160"), None, "ROOM", "3.20", _steady(4.5),
    ),
    DemoProduct(
        "Ciprofloxacin", "500 mg", "tablet", "pack of 10", "J01MA02", "MA-2013-01675",
        _g("00170"), None, "ROOM", "4.80", _steady(2.0),
    ),
    DemoProduct(
        "Metronidazole", "5 mg/ml", "solution for infusion", "bag 100 ml", "J01XD01",
        "MA-2014-00546", _g("00180"), None, "ROOM", "2.30", _steady(3.0),
    ),
    DemoProduct(
        "Vancomycin", "1 g", "powder for solution for infusion", "vial", "J01XA01",
        "MA-2019-00127", _g("00190"), None, "ROOM", "9.60", _steady(1.5),
    ),
    DemoProduct(
        "Gentamicin", "80 mg/2 ml", "solution for injection", "ampoule", "J01GB03",
        "MA-2011-01459", _g("00200"), None, "ROOM", "1.25", _steady(2.0),
    ),
    # --- Cardiovascular / anticoagulants ----------------------------------------------
    DemoProduct(
        "Amlodipine", "5 mg", "tablet", "pack of 30", "C08CA01", "MA-2013-02284",
        _g("00210"), None, "ROOM", "2.20", _steady(4.0),
    ),
    DemoProduct(
        "Bisoprolol", "5 mg", "tablet", "pack of 30", "C07AB07", "MA-2014-01811",
        _g("00220"), None, "ROOM", "2.45", _steady(4.0),
    ),
    DemoProduct(
        "Ramipril", "5 mg", "tablet", "pack of 28", "C09AA05", "MA-2012-02047",
        _g("00230"), None, "ROOM", "2.60", _steady(3.5),
    ),
    DemoProduct(
        "Furosemide", "20 mg/2 ml", "solution for injection", "ampoule", "C03CA01",
        "MA-2010-00935", _g("00240", "00241"), None, "ROOM", "0.70", _steady(7.0),
    ),
    DemoProduct(
        "Atorvastatin", "20 mg", "tablet", "pack of 30", "C10AA05", "MA-2016-01420",
        _g("00250"), None, "ROOM", "3.15", _steady(4.5),
    ),
    DemoProduct(
        "Enoxaparin sodium", "40 mg/0.4 ml", "solution for injection in pre-filled syringe",
        "pre-filled syringe", "B01AB05", "MA-2018-01066", _g("00260"), None, "ROOM", "4.10",
        _steady(18.0),
    ),
    DemoProduct(
        "Heparin sodium", "5000 IU/ml", "solution for injection", "vial 5 ml", "B01AB01",
        "MA-2011-00781", _g("00270"), None, "ROOM", "6.30", _steady(2.5),
    ),
    DemoProduct(
        "Clopidogrel", "75 mg", "tablet", "pack of 28", "B01AC04", "MA-2017-01593",
        _g("00280"), None, "ROOM", "4.70", _steady(2.5),
    ),
    # --- Diabetes ---------------------------------------------------------------------
    DemoProduct(
        "Insulin glargine", "100 units/ml", "solution for injection in pre-filled pen",
        "pre-filled pen 3 ml", "A10AE04", "MA-2019-00814", _g("00290"), None,
        "REFRIGERATED", "12.40", _steady(2.0),
    ),
    DemoProduct(
        "Insulin aspart", "100 units/ml", "solution for injection", "vial 10 ml", "A10AB05",
        "MA-2018-02175", _g("00300", "00301"), None, "REFRIGERATED", "21.90", _steady(1.5),
    ),
    DemoProduct(
        "Metformin hydrochloride", "850 mg", "tablet", "pack of 30", "A10BA02",
        "MA-2012-01298", _g("00310"), None, "ROOM", "1.90", _steady(3.5),
    ),
    # --- Respiratory ------------------------------------------------------------------
    DemoProduct(
        "Salbutamol", "100 micrograms/dose", "inhaler", "inhaler", "R03AC02",
        "MA-2013-00652", _g("00320"), None, "ROOM", "4.35", _winter(3.0),
    ),
    DemoProduct(
        "Budesonide/formoterol", "160 micrograms/4.5 micrograms", "inhaler", "inhaler",
        "R03AK07", "MA-2017-02301", _g("00330"), None, "ROOM", "38.60", _winter(1.2),
    ),
    DemoProduct(
        "Oseltamivir", "75 mg", "capsule", "pack of 10", "J05AH02", "MA-2019-01742",
        _g("00340"), None, "ROOM", "19.80", _winter(1.5),
    ),
    # --- Antihistamines ---------------------------------------------------------------
    DemoProduct(
        "Cetirizine dihydrochloride", "10 mg", "tablet", "pack of 20", "R06AE07",
        "MA-2014-02412", _g("00350"), None, "ROOM", "2.05", _summer(2.0),
    ),
    DemoProduct(
        "Loratadine", "10 mg", "tablet", "pack of 20", "R06AX13", "MA-2015-00879",
        _g("00360"), None, "ROOM", "2.30", _summer(1.5),
    ),
    # --- Gastrointestinal -------------------------------------------------------------
    DemoProduct(
        "Omeprazole", "20 mg", "gastro-resistant capsule", "pack of 28", "A02BC01",
        "MA-2013-01937", _g("00370"), None, "ROOM", "2.80", _steady(5.0),
    ),
    DemoProduct(
        "Pantoprazole", "40 mg", "powder for solution for injection", "vial", "A02BC02",
        "MA-2016-02509", _g("00380"), None, "ROOM", "3.95", _steady(6.0),
    ),
    DemoProduct(
        "Ondansetron", "4 mg/2 ml", "solution for injection", "ampoule", "A04AA01",
        "MA-2015-01683", _g("00390"), None, "ROOM", "1.45", _steady(6.5),
    ),
    # --- Infusion fluids --------------------------------------------------------------
    DemoProduct(
        "Sodium chloride", "0.9 %", "solution for infusion", "bag 1000 ml", "B05BB01",
        "MA-2010-00204", _g("00400", "00401"), None, "ROOM", "1.20", _steady(30.0),
    ),
    DemoProduct(
        "Glucose", "5 %", "solution for infusion", "bag 500 ml", "B05BA03",
        "MA-2010-00219", _g("00410"), None, "ROOM", "1.35", _steady(12.0),
    ),
    # --- Antidotes and emergency (intermittent) ---------------------------------------
    DemoProduct(
        "Naloxone hydrochloride", "0.4 mg/ml", "solution for injection", "ampoule",
        "V03AB15", "MA-2012-02633", _g("00420"), None, "ROOM", "6.80", _rare(0.3),
    ),
    DemoProduct(
        "Flumazenil", "0.1 mg/ml", "solution for injection", "ampoule 5 ml", "V03AB25",
        "MA-2014-02761", _g("00430"), None, "ROOM", "14.20", _rare(0.1),
    ),
    DemoProduct(
        "Atropine sulfate", "0.5 mg/ml", "solution for injection", "ampoule", "A03BA01",
        "MA-2011-02852", _g("00440"), None, "ROOM", "1.10", _rare(0.4),
    ),
    DemoProduct(
        "Epinephrine (adrenaline)", "1 mg/ml", "solution for injection", "ampoule",
        "C01CA24", "MA-2011-02867", _g("00450", "00451"), None, "ROOM", "1.55", _rare(0.6),
    ),
    DemoProduct(
        "Activated charcoal", "50 g", "oral suspension", "bottle 250 ml", "A07BA01",
        "MA-2013-02994", _g("00460"), None, "ROOM", "17.50", _rare(0.1),
    ),
    # --- Other ------------------------------------------------------------------------
    DemoProduct(
        "Prednisolone", "5 mg", "tablet", "pack of 30", "H02AB06", "MA-2012-03018",
        _g("00470"), None, "ROOM", "2.50", _steady(2.5),
    ),
    DemoProduct(
        "Dexamethasone", "4 mg/ml", "solution for injection", "ampoule", "H02AB02",
        "MA-2015-03102", _g("00480"), None, "ROOM", "1.30", _steady(4.0),
    ),
    DemoProduct(
        "Levothyroxine sodium", "100 micrograms", "tablet", "pack of 50", "H03AA01",
        "MA-2014-03125", _g("00490"), None, "ROOM", "2.65", _steady(1.5),
    ),
    DemoProduct(
        "Phytomenadione", "10 mg/ml", "solution for injection", "ampoule", "B02BA01",
        "MA-2016-03247", _g("00500"), None, "ROOM", "2.90", _rare(0.3),
    ),
    DemoProduct(
        "Tetanus vaccine (adsorbed)", "40 IU/0.5 ml", "suspension for injection",
        "pre-filled syringe", "J07AM01", "MA-2019-03366", _g("00510"), None,
        "REFRIGERATED", "9.75", _rare(0.2),
    ),
)


def demo_products_csv_rows() -> list[dict[str, str]]:
    """Return ``DEMO_PRODUCTS`` as rows of the ``apotheca import-catalog`` CSV."""
    return [
        {
            "name": p.name,
            "strength": p.strength,
            "dosage_form": p.dosage_form,
            "unit": p.unit,
            "atc_code": p.atc_code,
            "approval_number": p.approval_number,
            "gtins": ";".join(make_gtin14(body) for body in p.gtin_bodies),
            "controlled_schedule": p.controlled_schedule or "",
            "storage": p.storage,
            "unit_cost": p.unit_cost,
        }
        for p in DEMO_PRODUCTS
    ]
