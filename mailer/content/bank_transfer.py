"""PURE: how to pay by bank transfer: the tenant's account, the amount, the RF reference, a QR.

An invoice (or a customer's overdue summary, a batch payment) tells the customer where to
transfer the money and what to write in the transfer: the tenant's account holder, IBAN and BIC
(``[tenants.<slug>.bank]``, ``mailer/bank_config.py``), the amount due and the document's ISO 11649
reference, exactly as ``mailer/ledger/references.py`` builds it, so the bank statement import
(``mailer/ledger/bank_matching.py``) maps the transfer back to that invoice without guessing.

For euro amounts it adds the SEPA "EPC QR code" (EPC069-12 v3.0, "Quick Response Code:
Guidelines to Enable Data Capture for the Initiation of a SEPA Credit Transfer") that banking
apps scan instead of the customer typing the IBAN. The payload is these lines, separated by LF,
in this order (trailing empty elements left off):

    BCD / 002 / 1 (UTF-8) / SCT / BIC (optional in 002) / beneficiary name (<= 70)
    / IBAN (<= 34) / EUR amount (EUR0.01 .. EUR999999999.99) / purpose (4, optional)
    / structured reference (ISO 11649, <= 35) / unstructured text (<= 140) / information (<= 70)

at most 331 bytes, drawn at error correction level M (QR version 13 at most). The structured
reference and the unstructured text exclude each other; ours always has the reference. The
layout is checked against segno's own builder (``segno.helpers.make_epc_qr``) in the tests;
segno draws the code, and the image travels *inside* the context as a ``data:`` URI (a PNG), so
neither the email, the PDF (``mailer/content/pdf_fetch.py`` fetches nothing) nor the hosted page
loads anything to show it.

The block is built when the email is queued and frozen into its context (``bank_transfer``),
like everything else an email shows: a retry, the PDF and the hosted page of that email show the
same account and amount.
"""

from __future__ import annotations

import re
import unicodedata

import segno
from schwifty import IBAN

from mailer.bank_config import BankConfig
from mailer.content.shapes import BankTransferData
from mailer.ledger.money import from_minor
from mailer.ledger.references import format_reference

MAX_NAME = 70  # characters of the beneficiary's name
MAX_REFERENCE = 35  # characters of the structured (ISO 11649) reference
MAX_TEXT = 140  # characters of the unstructured remittance text
MAX_PAYLOAD = 331  # bytes: the capacity of a version 13 QR code at level M
MIN_AMOUNT_MINOR, MAX_AMOUNT_MINOR = 1, 99_999_999_999  # EUR0.01 .. EUR999999999.99
ERROR_LEVEL = "M"  # the only level EPC069-12 allows
QR_SCALE = 4  # pixels per module of the PNG: about 4 cm wide at 150 dpi, crisp when printed
QUIET_ZONE = 4  # modules of white around the code, as ISO/IEC 18004 asks
_SPACES = re.compile(r"\s+")
_SVG_PATH = re.compile(r' d="([MmHhVvZz0-9 .-]+)"')


class EpcError(ValueError):
    """A field cannot go into an EPC QR code as it is (the message names the field and limit)."""


def one_line(text: str) -> str:
    """``text`` as one line of a payload: no control characters, runs of white space as one."""
    shown = "".join(" " if unicodedata.category(c)[0] in "CZ" else c for c in text)
    return _SPACES.sub(" ", shown).strip()


def epc_amount(amount_minor: int) -> str:
    """``EUR`` and the amount with at most two decimals and no trailing zeros (``EUR12.5``)."""
    if not MIN_AMOUNT_MINOR <= amount_minor <= MAX_AMOUNT_MINOR:
        raise EpcError(f"amount: {amount_minor} cents is outside EUR0.01..EUR999999999.99")
    digits = f"{from_minor(amount_minor, 'EUR'):.2f}"
    return "EUR" + (digits.rstrip("0").rstrip(".") if "." in digits else digits)


def epc_payload(
    *,
    name: str,
    iban: str,
    amount_minor: int,
    reference: str,
    bic: str | None = None,
    purpose: str = "",
) -> str:
    """The EPC069-12 "SCT" payload (module docstring) for a transfer quoting ``reference``.

    The name is cut to what fits: 70 characters, and fewer when a name in a non-Latin script
    would take the payload past its 331 bytes (a bank shows the account holder it has on file;
    the name in the code only helps the customer recognise it). Anything else out of bounds is
    an :class:`EpcError` naming the field.
    """
    if bic is not None and len(bic) not in (8, 11):
        raise EpcError(f"BIC: {bic!r} is not 8 or 11 characters")
    if not 5 <= len(iban) <= 34 or not iban.isalnum():
        raise EpcError(f"IBAN: {iban[:40]!r} is not 5 to 34 letters and digits")
    if purpose and (len(purpose) != 4 or not purpose.isalnum()):
        raise EpcError(f"purpose: {purpose!r} is not a 4-character code")
    if not reference or len(reference) > MAX_REFERENCE or not reference.isalnum():
        raise EpcError(f"reference: {reference[:40]!r} is not 1 to 35 letters and digits")
    head = ["BCD", "002", "1", "SCT", bic or ""]
    tail = [iban, epc_amount(amount_minor), purpose, reference]
    fixed = len("\n".join([*head, "", *tail]).encode())
    room = MAX_PAYLOAD - fixed
    beneficiary = one_line(name)[:MAX_NAME].rstrip()
    while len(beneficiary.encode()) > room:
        beneficiary = beneficiary[:-1].rstrip()
    if not beneficiary:
        raise EpcError("name: the beneficiary's name is empty")
    return "\n".join([*head, beneficiary, *tail])


def epc_qr(payload: str) -> segno.QRCode:
    """The QR code of ``payload`` as EPC069-12 wants it: byte mode, UTF-8, level M exactly."""
    return segno.make_qr(payload.encode("utf-8"), error=ERROR_LEVEL, boost_error=False)


def qr_data_uri(qr: segno.QRCode) -> str:
    """``qr`` as an inline PNG (``data:image/png;base64,...``) for the email and the web page:
    nothing to fetch."""
    return str(qr.png_data_uri(scale=QR_SCALE, border=QUIET_ZONE))


def qr_svg_path(qr: segno.QRCode) -> tuple[str, int]:
    """``qr`` as the ``d`` of one SVG path (stroked, 1 unit per module) and the side of its
    square viewBox, quiet zone included: the PDF draws it as inline ``<svg>``, because its
    fetcher refuses ``data:`` URIs (``mailer/content/pdf_fetch.py``)."""
    svg = qr.svg_inline(scale=1, border=QUIET_ZONE, omitsize=False)
    found = _SVG_PATH.search(svg)
    if found is None:  # segno always writes one path; a new version that does not is a bug
        raise EpcError("segno wrote no SVG path for the QR code")
    side = qr.symbol_size(scale=1, border=QUIET_ZONE)[0]
    return found.group(1), int(side)


def bank_transfer(
    bank: BankConfig,
    *,
    tenant_name: str,
    reference: str,
    amount_minor: int,
    currency: str,
) -> BankTransferData:
    """What the email, the PDF and the hosted page show to pay ``amount_minor`` into ``bank``.

    The caller offers it only when something is due (``mailer/content/context.py``). The QR
    code only for euros within the EPC's bounds; the text instructions for any currency.
    ``reference`` is the compact RF reference (``references.invoice_reference`` or
    ``customer_reference``); the account holder is ``bank.account_name``, else the tenant's name.
    """
    name = one_line(bank.account_name or tenant_name)
    data: BankTransferData = {
        "account_name": name,
        "iban": bank.iban,
        "iban_display": str(IBAN(bank.iban).formatted),
        "bic": bank.bic,
        "amount_minor": amount_minor,
        "currency": currency,
        "reference": reference,
        "reference_display": format_reference(reference),
        "qr": None,
        "qr_path": None,
        "qr_size": 0,
    }
    if currency == "EUR" and MIN_AMOUNT_MINOR <= amount_minor <= MAX_AMOUNT_MINOR and name:
        payload = epc_payload(
            name=name,
            iban=bank.iban,
            amount_minor=amount_minor,
            reference=reference,
            bic=bank.bic,
        )
        qr = epc_qr(payload)
        data["qr"] = qr_data_uri(qr)
        data["qr_path"], data["qr_size"] = qr_svg_path(qr)
    return data
