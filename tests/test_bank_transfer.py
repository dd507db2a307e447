"""The bank transfer block (mailer/content/bank_transfer.py): the EPC069-12 "SCT" payload, field
by field and at its limits, checked against segno's own EPC builder; the QR code decoded back
(zxing-cpp) from the PNG the email carries and from the SVG path the PDF draws."""

from __future__ import annotations

import base64
import io
import re

import pytest
import segno
import segno.helpers
import zxingcpp
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from mailer.bank_config import BankConfig
from mailer.content.bank_transfer import (
    ERROR_LEVEL,
    MAX_AMOUNT_MINOR,
    MAX_NAME,
    MAX_PAYLOAD,
    EpcError,
    bank_transfer,
    epc_amount,
    epc_payload,
    epc_qr,
    one_line,
    qr_svg_path,
)
from mailer.ledger.references import (
    ReferenceKind,
    build_reference,
    format_reference,
    invoice_reference,
    parse_reference,
)

IBAN = "DE89370400440532013000"
BIC = "COBADEFFXXX"
BANK = BankConfig(iban="DE89 3704 0044 0532 0130 00", bic=BIC, account_name="Acme Supplies GmbH")
REF = invoice_reference(3, 105)


def decode_png(data_uri: str) -> str:
    """The text of the one QR code in a ``data:image/png;base64,`` URI."""
    prefix = "data:image/png;base64,"
    assert data_uri.startswith(prefix)
    image = Image.open(io.BytesIO(base64.b64decode(data_uri[len(prefix) :])))
    found = zxingcpp.read_barcodes(image.convert("L"))
    assert len(found) == 1
    return str(found[0].text)


def modules_of_path(path: str, side: int) -> list[list[bool]]:
    """The dark modules an SVG path of stroked horizontal runs (segno's ``M x y.5 h n m dx dy``)
    paints, as a grid: what a PDF viewer draws from the inline SVG."""
    grid = [[False] * side for _ in range(side)]
    x = y = 0.0
    for op, args in re.findall(r"([MmHh])([-0-9. ]+)", path):
        numbers = [float(n) for n in args.split()]
        if op in "Mm":
            x, y = (numbers[0], numbers[1]) if op == "M" else (x + numbers[0], y + numbers[1])
        else:
            end = numbers[0] if op == "H" else x + numbers[0]
            for column in range(int(x), int(end)):
                grid[int(y)][column] = True
            x = end
    return grid


def test_the_payload_is_the_epc069_12_layout() -> None:
    payload = epc_payload(
        name="Acme Supplies GmbH", iban=IBAN, amount_minor=123450, reference=REF, bic=BIC
    )
    assert payload.split("\n") == [
        "BCD",  # service tag
        "002",  # version: BIC optional inside the EEA
        "1",  # character set: UTF-8
        "SCT",  # SEPA credit transfer
        BIC,
        "Acme Supplies GmbH",
        IBAN,
        "EUR1234.5",
        "",  # purpose: none
        REF,  # structured ISO 11649 reference; no unstructured text beside it
    ]
    assert parse_reference(payload.split("\n")[9]) == parse_reference(REF)


def test_optional_fields_stay_in_their_place() -> None:
    lines = epc_payload(
        name="Acme", iban=IBAN, amount_minor=1, reference=REF, purpose="GDDS"
    ).split("\n")
    assert lines[4] == "" and lines[7] == "EUR0.01" and lines[8] == "GDDS" and len(lines) == 10


@pytest.mark.parametrize(
    ("minor", "text"),
    [
        (1, "EUR0.01"),
        (10, "EUR0.1"),
        (100, "EUR1"),
        (12005, "EUR120.05"),
        (MAX_AMOUNT_MINOR, "EUR999999999.99"),
    ],
)
def test_amounts(minor: int, text: str) -> None:
    assert epc_amount(minor) == text


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("amount_minor", 0, "amount"),
        ("amount_minor", MAX_AMOUNT_MINOR + 1, "amount"),
        ("amount_minor", -5, "amount"),
        ("reference", "RF" + "1" * 34, "reference"),
        ("reference", "RF18 5390", "reference"),
        ("reference", "", "reference"),
        ("bic", "COBADEFFX", "BIC"),
        ("iban", "DE89 3704", "IBAN"),
        ("purpose", "GDD", "purpose"),
        ("name", " \n\t ", "name"),
    ],
)
def test_out_of_bounds_is_an_error_naming_the_field(field: str, value: object, says: str) -> None:
    fields: dict[str, object] = {
        "name": "Acme",
        "iban": IBAN,
        "amount_minor": 100,
        "reference": REF,
    }
    fields[field] = value
    with pytest.raises(EpcError, match=says):
        epc_payload(**fields)  # type: ignore[arg-type]


def test_a_long_name_in_a_wide_script_is_cut_to_the_331_bytes() -> None:
    payload = epc_payload(
        name="𝔄" * 200, iban="LC55HEMM000100010012001200023015", amount_minor=MAX_AMOUNT_MINOR,
        reference="RF" + "9" * 33, bic=BIC, purpose="GDDS",
    )  # fmt: skip
    name = payload.split("\n")[5]
    assert len(payload.encode()) <= MAX_PAYLOAD and name and set(name) == {"𝔄"}
    assert len(payload.encode()) > MAX_PAYLOAD - 4  # cut no shorter than it had to be
    assert epc_qr(payload).version in range(1, 14)


_NAMES = st.text(st.characters(codec="utf-8"), min_size=1, max_size=150).filter(
    lambda n: one_line(n) != ""
)
_OUR_REFERENCES = st.builds(
    build_reference,
    st.integers(1, 36**5),
    st.sampled_from(list(ReferenceKind)),
    st.integers(1, 36**12),
)
_ANY_REFERENCES = st.text(
    st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"), min_size=1, max_size=35
)


@settings(max_examples=150, deadline=None)
@given(
    name=_NAMES,
    amount=st.integers(1, MAX_AMOUNT_MINOR),
    reference=st.one_of(_OUR_REFERENCES, _ANY_REFERENCES),
    bic=st.sampled_from([None, BIC, "COBADEFF"]),
)
def test_any_name_amount_and_reference_give_a_valid_payload(
    name: str, amount: int, reference: str, bic: str | None
) -> None:
    payload = epc_payload(name=name, iban=IBAN, amount_minor=amount, reference=reference, bic=bic)
    lines = payload.split("\n")
    assert len(lines) == 10 and lines[:4] == ["BCD", "002", "1", "SCT"]
    assert lines[4] == (bic or "") and lines[6] == IBAN and lines[9] == reference
    assert re.fullmatch(r"EUR[1-9][0-9]{0,8}(\.[0-9]{1,2})?|EUR0\.[0-9]{1,2}", lines[7])
    assert lines[5] and len(lines[5]) <= MAX_NAME and one_line(name).startswith(lines[5])
    assert len(payload.encode("utf-8")) <= MAX_PAYLOAD
    # segno's own EPC builder, given the name as we cut it, writes the same bytes
    ours = segno.helpers._make_epc_qr_data(  # type: ignore[attr-defined]  # noqa: SLF001
        lines[5], IBAN, lines[7][3:], None, reference, bic, None, 1
    )
    assert ours == payload.encode("utf-8")


@settings(max_examples=25, deadline=None)
@given(name=_NAMES, amount=st.integers(1, MAX_AMOUNT_MINOR), reference=_OUR_REFERENCES)
def test_the_qr_code_reads_back_as_the_payload(name: str, amount: int, reference: str) -> None:
    payload = epc_payload(name=name, iban=IBAN, amount_minor=amount, reference=reference, bic=BIC)
    qr = epc_qr(payload)
    assert qr.error == ERROR_LEVEL and qr.mode == "byte" and qr.version in range(1, 14)
    assert decode_png(qr.png_data_uri(scale=4, border=4)) == payload


def test_the_pdf_path_draws_the_same_code() -> None:
    payload = epc_payload(name="Société Générale", iban=IBAN, amount_minor=4599, reference=REF)
    qr = epc_qr(payload)
    path, side = qr_svg_path(qr)
    matrix = [[bool(m) for m in row] for row in qr.matrix_iter(scale=1, border=4)]
    assert side == len(matrix) and modules_of_path(path, side) == matrix


def test_the_block_for_euros_has_the_qr_code_and_the_texts_in_groups_of_four() -> None:
    data = bank_transfer(
        BANK, tenant_name="Acme", reference=REF, amount_minor=12000, currency="EUR"
    )
    assert data["iban_display"] == "DE89 3704 0044 0532 0130 00"
    assert data["reference_display"] == " ".join(REF[i : i + 4] for i in range(0, len(REF), 4))
    assert data["account_name"] == "Acme Supplies GmbH" and data["bic"] == BIC
    assert data["qr"] is not None
    lines = decode_png(data["qr"]).split("\n")
    assert lines[5:8] == ["Acme Supplies GmbH", IBAN, "EUR120"] and lines[9] == REF


def test_other_currencies_get_the_text_but_no_qr_code() -> None:
    bank = BankConfig(iban="GB33 BUKB 2020 1555 5555 55")  # no BIC, no account name
    data = bank_transfer(
        bank, tenant_name="Acme\nLtd", reference=REF, amount_minor=12000, currency="GBP"
    )
    assert data["qr"] is None and data["qr_path"] is None
    assert data["account_name"] == "Acme Ltd" and data["bic"] is None
    assert data["iban_display"] == "GB33 BUKB 2020 1555 5555 55"


def test_an_amount_beyond_the_epc_bounds_gets_no_qr_code() -> None:
    data = bank_transfer(
        BANK, tenant_name="Acme", reference=REF, amount_minor=MAX_AMOUNT_MINOR + 1, currency="EUR"
    )
    assert data["qr"] is None and data["reference"] == REF


def _context_with_block(name: str) -> dict[str, object]:
    from mailer.content.samples import sample_context

    ctx = sample_context("new_invoice", locale="en")
    bank = BANK.model_copy(update={"account_name": name})
    ctx["bank_transfer"] = bank_transfer(
        bank, tenant_name="Acme", reference=REF, amount_minor=12000, currency="EUR"
    )
    return ctx


def test_the_account_holder_is_text_in_the_html() -> None:
    from mailer.content.render import Renderer

    html = Renderer().render("new_invoice", _context_with_block('<b>Acme</b> & "Co"')).html or ""
    assert "&lt;b&gt;Acme&lt;/b&gt; &amp;" in html and "<b>Acme</b>" not in html
    # the QR code is the one data: URI, and nothing remote besides the logo and the links
    assert html.count('src="data:image/png;base64,') == 1 and html.count("data:") == 1


def test_a_tenants_html_override_keeps_the_text_but_loses_the_qr_image() -> None:
    """safe_html lets an override load no image but the logo: the inline QR code goes, the
    instructions (and the reference to copy) stay."""
    from mailer.content.render import Renderer

    source = (
        '{% extends "_layout.html" %}{% block content %}'
        '{% include "_bank_transfer.html" %}{% endblock %}'
    )
    ctx = _context_with_block("Acme Supplies GmbH")
    html = Renderer().render("new_invoice", ctx, overrides={"html": source}).html or ""
    assert "Pay by bank transfer" in html and format_reference(REF) in html and "DE89 3704" in html
    assert "data:image" not in html
