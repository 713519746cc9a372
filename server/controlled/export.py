"""The controlled-drug register as CSV and as a PDF for an inspector (fpdf2). Pure: a Register
and the names of the people in it in, bytes out."""

from __future__ import annotations

from collections.abc import Mapping

from fpdf import FPDF

from server.controlled.service import Register, RegisterEntry
from server.core.downloads import csv_text

CSV_COLUMNS = (
    "movement_id",
    "occurred_at",
    "recorded_at",
    "kind",
    "batch_number",
    "expiry_date",
    "quantity",
    "balance",
    "recorded_by",
    "witness",
    "reason",
    "reference",
    "patient_reference",
)
HIDDEN = "(hidden)"


def period_text(register: Register) -> str:
    since = register.since.isoformat() if register.since else "first movement"
    until = (
        register.until.isoformat() if register.until else register.generated_at.date().isoformat()
    )
    return f"{since} to {until}"


def _patient(entry: RegisterEntry) -> str:
    return HIDDEN if entry.patient_reference_hidden else entry.patient_reference or ""


def _name(names: Mapping[int, str], user_id: int | None) -> str:
    return names.get(user_id, str(user_id)) if user_id is not None else ""


def register_csv(register: Register, names: Mapping[int, str]) -> str:
    """One header row, then one row per movement; opening and closing balances are the
    first row's balance minus its quantity, and the last row's balance."""
    return csv_text(
        CSV_COLUMNS,
        (
            (
                entry.movement.id,
                entry.movement.occurred_at.isoformat(),
                entry.movement.recorded_at.isoformat(),
                entry.movement.kind.value,
                entry.batch_number,
                entry.expiry_date.isoformat(),
                entry.movement.quantity,
                entry.balance,
                _name(names, entry.movement.actor_id),
                _name(names, entry.witness_id),
                entry.movement.reason,
                entry.movement.reference,
                _patient(entry),
            )
            for entry in register.entries
        ),
        crlf=False,
    )


def _latin(text: str) -> str:
    """fpdf2's core fonts are Latin-1: anything else prints as '?' rather than failing."""
    return text.encode("latin-1", "replace").decode("latin-1")


class _RegisterPdf(FPDF):
    title_line = ""

    def header(self) -> None:
        self.set_font("Helvetica", "B", 9)
        self.cell(0, 5, _latin(self.title_line), new_x="LMARGIN", new_y="NEXT")
        self.ln(1)

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font("Helvetica", "", 8)
        self.cell(0, 5, f"Page {self.page_no()} of {{nb}}", align="C")


# (heading, width in mm) of the movement table on landscape A4 (277 mm between margins)
_TABLE = (
    ("Date (UTC)", 30),
    ("Kind", 22),
    ("Batch", 24),
    ("Qty", 14),
    ("Balance", 16),
    ("Recorded by", 42),
    ("Witness", 42),
    ("Reason / reference", 55),
    ("Patient", 32),
)


def register_pdf(register: Register, names: Mapping[int, str]) -> bytes:
    """A4 landscape: who, what, where and when on top; one row per movement; page numbers,
    the time it was generated and lines for the inspector's and pharmacist's signatures."""
    product = register.product
    pdf = _RegisterPdf(orientation="L", format="A4")
    pdf.title_line = (
        f"Controlled drug register - {product.name} {product.strength} - {register.location.code}"
    )
    pdf.alias_nb_pages()
    pdf.set_auto_page_break(auto=True, margin=16)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 14)
    pdf.cell(0, 8, "Controlled drug register", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 10)
    facts = [
        ("Organisation", register.organisation.name),
        ("Location", f"{register.location.name} ({register.location.code})"),
        (
            "Product",
            f"{product.name} {product.strength} {product.dosage_form}, "
            f"schedule {product.controlled_schedule}, approval {product.approval_number}",
        ),
        ("Strength", product.strength),
        ("Period", period_text(register)),
        ("Opening balance", f"{register.opening_balance} {product.unit}"),
        ("Closing balance", f"{register.closing_balance} {product.unit}"),
        ("Generated at", register.generated_at.strftime("%Y-%m-%d %H:%M UTC")),
    ]
    for label, value in facts:
        pdf.set_font("Helvetica", "B", 10)
        pdf.cell(38, 6, _latin(label))
        pdf.set_font("Helvetica", "", 10)
        pdf.cell(0, 6, _latin(value), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    _table_head(pdf)
    pdf.set_font("Helvetica", "", 8)
    widths = _Widths(pdf)
    if not register.entries:
        pdf.cell(0, 6, "No movements in this period.", new_x="LMARGIN", new_y="NEXT")
    for entry in register.entries:
        if pdf.will_page_break(6):
            pdf.add_page()
            _table_head(pdf)
            pdf.set_font("Helvetica", "", 8)
        m = entry.movement
        why = " / ".join(x for x in (m.reason, m.reference) if x)
        cells = (
            m.occurred_at.strftime("%Y-%m-%d %H:%M"),
            m.kind.value,
            entry.batch_number,
            f"{m.quantity:+d}",
            str(entry.balance),
            _name(names, m.actor_id),
            _name(names, entry.witness_id),
            why,
            _patient(entry),
        )
        _row(pdf, cells, widths)
    if pdf.will_page_break(40):
        pdf.add_page()
    pdf.ln(10)
    pdf.set_font("Helvetica", "", 10)
    for role in ("Pharmacist in charge", "Inspector"):
        pdf.cell(120, 8, f"{role}: name ______________________________", new_x="RIGHT")
        pdf.cell(0, 8, "Signature ____________________   Date __________", new_x="LMARGIN")
        pdf.ln(12)
    return bytes(pdf.output())


def _table_head(pdf: FPDF) -> None:
    pdf.set_font("Helvetica", "B", 8)
    pdf.set_fill_color(230, 230, 230)
    for heading, width in _TABLE:
        pdf.cell(width, 6, heading, border=1, fill=True)
    pdf.ln()


class _Widths:
    """String widths in the row font, remembered: fpdf2 measures slowly and register rows repeat
    the same dates, kinds, batches and names."""

    def __init__(self, pdf: FPDF) -> None:
        self.pdf = pdf
        self.known: dict[str, float] = {}

    def __call__(self, text: str) -> float:
        width = self.known.get(text)
        if width is None:
            width = self.known[text] = self.pdf.get_string_width(text)
        return width


_ROW_HEIGHT = 6
_RIGHT = frozenset({"Qty", "Balance"})


def _row(pdf: FPDF, cells: tuple[str, ...], widths: _Widths) -> None:
    """One table row drawn with rectangles and plain text: fpdf2's `cell` costs about a
    millisecond each, which made a 10,000-line register take most of a minute."""
    x, y = pdf.l_margin, pdf.get_y()
    for (heading, width), raw in zip(_TABLE, cells, strict=True):
        text = _fit(widths, _latin(raw), width)
        pdf.rect(x, y, width, _ROW_HEIGHT)
        left = x + width - 1 - widths(text) if heading in _RIGHT else x + 1
        pdf.text(left, y + 4.2, text)
        x += width
    pdf.set_y(y + _ROW_HEIGHT)


def _fit(widths: _Widths, text: str, width: float) -> str:
    """Cut a cell's text to its column (with an ellipsis) rather than overflow it."""
    if widths(text) <= width - 2:
        return text
    while text and widths(text + "...") > width - 2:
        text = text[:-1]
    return text + "..."
