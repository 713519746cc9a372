"""The one way report downloads write CSV and refuse (server/core/downloads.py)."""

from __future__ import annotations

import csv
import io
import json

import pytest

from server.core.downloads import csv_text, refusal, spreadsheet_safe
from server.core.errors import Forbidden, InvalidInput, Unauthenticated


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1", "'+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tTAB", "'\tTAB"),
        ("\rCR", "'\rCR"),
        ("ENC-42", "ENC-42"),
        ("", ""),
        (None, ""),
    ],
)
def test_a_cell_a_spreadsheet_would_run_gets_an_apostrophe(cell: str | None, expected: str) -> None:
    assert spreadsheet_safe(cell) == expected


def test_csv_text_keeps_numbers_and_neutralises_text() -> None:
    text = csv_text(
        ("who", "quantity", "note"), [("=cmd|' /C calc'!A0", -3, None), ("nurse", 2, "ok")]
    )
    assert text.endswith("\r\n")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows == [
        ["who", "quantity", "note"],
        ["'=cmd|' /C calc'!A0", "-3", ""],  # a negative quantity stays a number
        ["nurse", "2", "ok"],
    ]
    assert "\r\n" not in csv_text(("a",), [("b",)], crlf=False)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (Unauthenticated("send a token"), 401),
        (Forbidden("not yours"), 403),
        (InvalidInput("not a date", field="from"), 400),
    ],
)
def test_refusals_answer_in_the_graphql_error_shape(error: Exception, status: int) -> None:
    response = refusal(error)  # type: ignore[arg-type]
    assert response.status_code == status
    assert response.headers["cache-control"] == "no-store"
    (body,) = json.loads(response.body)["errors"]
    assert body["message"] == error.message  # type: ignore[attr-defined]
    assert body["extensions"]["code"] == error.code.value  # type: ignore[attr-defined]
    assert body["extensions"]["field"] == getattr(error, "field", None)
