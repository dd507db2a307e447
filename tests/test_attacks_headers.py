"""The attack catalogue, headers family: CRLF header injection through every customer-controlled
field that can reach a header.

Part of the catalogue split by attack family (``tests/test_attacks_*.py``); every attack goes
through the real paths, on SQLite and PostgreSQL where a database is involved.
"""

from __future__ import annotations

import copy
import email
import re
from datetime import timedelta
from email import policy
from typing import Any

import pytest

from dunmail.app import Services
from mailer.clock import FixedClock
from mailer.content.attachment import plan_pdf
from mailer.content.kinds import KINDS
from mailer.content.samples import sample_context
from mailer.errors import TemplateError
from mailer.outbound.compose import Attachment, Draft, build_message, to_bytes
from mailer.outbound.memory import MemoryTransport
from mailer.outbound.requests import Claimed
from tests.conftest import DEMO_DOC
from tests.test_web_ui import fast_argon2

__all__ = ["fast_argon2"]  # a fixture used here, imported from test_web_ui


@pytest.fixture
def relay_env(
    two_tenant_env: tuple[Services, MemoryTransport],
) -> tuple[Services, MemoryTransport]:
    """conftest's ``relay_env`` plus a second tenant, "beta" (what ``web_server`` serves)."""
    return two_tenant_env


# -- 1. CRLF header injection ------------------------------------------------------------------

# What an attacker appends to a field: a header of their own, then one more for good measure.
INJECTED = "\r\nBcc: evil@attacker.example\r\nX-Injected: 1"
# Every way a value could try to break a header line: CRLF, bare LF or CR, NUL, the other
# ASCII and Unicode line separators, escape and the C0 controls some parsers mis-handle.
BREAKS = ["\r\n", "\n", "\r", "\0", "\x0b", "\x0c", "\x1b", "\x85", "\u2028", "\u2029"]
_HEADER_LINE = re.compile(rb"[!-9;-~]+:[ \t][ -~]*|[ \t]+[ -~]*")


def assert_no_injected_header(data: bytes) -> None:
    """Every header line of the message and of each MIME part is well formed (RFC 5322
    s2.2: printable ASCII name, colon, printable value; continuations start with blank
    space) and no part carries a Bcc or X-Injected header."""
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
    assert b"\r" not in data.replace(b"\r\n", b"") and b"\0" not in data
    parsed = email.message_from_bytes(data, policy=policy.SMTP)
    for part in parsed.walk():
        assert part.get_all("Bcc") is None and part.get_all("X-Injected") is None
        assert not part.defects, part.defects
    # The raw header blocks: the message's, and each part's (after its boundary line).
    blocks = [data.split(b"\r\n\r\n", 1)[0]]
    for boundary in re.findall(rb'boundary="([^"]+)"', blocks[0] + data):
        for chunk in data.split(b"--" + boundary + b"\r\n")[1:]:
            blocks.append(chunk.split(b"\r\n\r\n", 1)[0])
    for block in blocks:
        for line in block.split(b"\r\n"):
            assert _HEADER_LINE.fullmatch(line), line
            assert not re.match(rb"(?i)(bcc|x-injected):", line), line


def _evil_document() -> dict[str, Any]:
    """DEMO_DOC plus one of every document, each customer-controlled text carrying INJECTED."""
    evil = INJECTED
    doc = copy.deepcopy(DEMO_DOC)
    customer = doc["customers"][0]
    customer["name"] = "Globex" + evil
    customer["contacts"] = [{"email": "ap@globex.example", "name": "AP" + evil, "roles": ["ap"]}]
    invoice = doc["invoices"][0]
    invoice["number"] = "INV-1042" + evil
    invoice["lines"][0]["description"] = "Support" + evil
    doc["credit_notes"] = [
        {
            **{"id": "cn-1", "number": "CN-7" + evil, "customer": "C-1", "currency": "EUR"},
            **{"issued_at": "2026-03-01", "invoice": "i-1042", "reason": "Goodwill" + evil},
            "lines": [{"description": "Goodwill" + evil, "quantity": "1", "unit_price": "10"}],
        }
    ]
    doc["payments"] = [
        {
            **{"id": "p-1", "customer": "C-1", "amount": "50.00", "currency": "EUR"},
            **{"received_at": "2026-03-01T14:00:00Z", "method": "Visa" + evil},
            "receipt_number": "RCPT-5521" + evil,
            "invoices": [{"invoice": "i-1042", "amount": "50.00"}],
        }
    ]
    doc["estimates"] = [
        {
            **{"id": "est-9", "number": "EST-204" + evil, "customer": "C-1", "currency": "EUR"},
            **{"issued_at": "2026-03-01", "valid_until": "2026-04-01", "status": "sent"},
            "lines": [{"description": "Migration" + evil, "quantity": "3", "unit_price": "400"}],
        }
    ]
    return doc


async def test_crlf_in_every_imported_field_adds_no_header(
    relay_env: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    services, transport = relay_env
    assert services.ledger.import_document(_evil_document(), tenant="acme").errors == []
    # The tenant's own subject puts the customer's name into the header too.
    services.desk.save_template(
        "new_invoice",
        "subject",
        "{{ customer.name }}: invoice {{ invoice.number }}",
        tenant="acme",
        updated_by="t",
    )
    preview = await services.previews.build(
        "new_invoice", invoice="INV-1042" + INJECTED, tenant="acme"
    )
    assert_no_injected_header(preview.data)
    for _ in range(4):  # new invoice after its grace, receipt, credit note, estimate
        clock.advance(timedelta(hours=4))
        await services.dunning.tick()
    kinds = {row["kind"]: row for row in services.desk.outbox_rows()}
    assert set(kinds) >= {"new_invoice", "payment_receipt", "credit_note", "estimate"}
    assert all(row["status"] == "sent" for row in kinds.values()), kinds
    for sent in transport.sent:
        assert_no_injected_header(sent.data)
        assert sent.recipients == ("ap@globex.example",)
        subject = email.message_from_bytes(sent.data, policy=policy.default)["Subject"]
        assert "Bcc: evil@attacker.example X-Injected: 1" in subject  # flattened, not obeyed


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the database plays no part
async def test_crlf_in_a_contact_address_is_refused_at_import_naming_the_field(
    relay_env: tuple[Services, MemoryTransport],
) -> None:
    services, _ = relay_env
    doc = copy.deepcopy(DEMO_DOC)
    doc["customers"][0]["contacts"][1]["email"] = "billing@globex.example" + INJECTED
    doc["customers"][0]["contacts"][0]["email"] = "ap@globex.example\r\n"
    errors = [str(e) for e in services.ledger.import_document(doc, tenant="acme").errors]
    assert len(errors) == 2, errors
    assert errors[0].startswith("customers[0].contacts[0].email")
    assert errors[1].startswith("customers[0].contacts[1].email")


async def test_any_line_break_or_control_in_a_number_still_sends_a_well_formed_message(
    relay_env: tuple[Services, MemoryTransport], db_url: str
) -> None:
    services, transport = relay_env
    doc = copy.deepcopy(DEMO_DOC)
    template = doc["invoices"].pop()
    for n, brk in enumerate(BREAKS):
        number = f"INV-{n}{brk}Bcc: evil@attacker.example{brk}X-Injected: 1"
        doc["invoices"].append({**template, "id": f"i-{n}", "number": number})
    errors = [str(e) for e in services.ledger.import_document(doc, tenant="acme").errors]
    if "postgresql" in db_url:
        # PostgreSQL text cannot hold NUL: that one is refused at import, naming the record.
        nul = BREAKS.index("\0")
        assert len(errors) == 1 and errors[0].startswith(f"invoices[{nul}]"), errors
    else:
        assert errors == []
    for invoice in doc["invoices"]:
        if "\0" in invoice["number"] and errors:
            continue
        message = await services.sending.send_invoice(
            invoice["number"], kind="new_invoice", tenant="acme"
        )
        assert message.status == "sent", (invoice["number"], message.last_error)
        assert_no_injected_header(transport.sent[-1].data)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the database plays no part
async def test_crlf_in_any_kinds_context_never_reaches_a_header(
    relay_env: tuple[Services, MemoryTransport],
) -> None:
    """Every kind's customer-controlled text (numbers, names, plan, method, reason, lines) and
    the PDF file name made from its number, through the assembler the outbox and preview use."""
    services, _ = relay_env
    tenant_id = services.tenants.id("acme")
    profile = services.sending.dispatcher.profile(tenant_id)
    for kind in sorted(KINDS):
        context = sample_context(kind, locale="en")
        tenant = context.pop("tenant")  # the tenant's name and look are config, not data
        context = {**_poisoned(context), "tenant": tenant}
        snapshot = Claimed(
            id=0,
            uid="0123456789abcdef0123",
            tenant_id=tenant_id,
            kind=kind,
            context=context,
            created_at=services.clock.now(),
            attempts=0,
            recipients=("ap@globex.example",),
            previously_accepted=0,
        )
        envelope = profile.identity.envelope(snapshot.uid)
        built = await services.assembler.with_pdfs(None).assemble(
            snapshot, profile.sender, envelope, now=snapshot.created_at
        )
        assert_no_injected_header(built.data)
        target = plan_pdf(kind, context)
        if target is not None:  # the attachment's file name comes from the document's number
            draft = Draft(
                uid=snapshot.uid,
                message_id_domain="acme.example",
                date=snapshot.created_at,
                to=[],
                envelope=envelope,
                attachments=[Attachment(filename=target.filename, content=b"%PDF-1.7")],
            )
            rendered = services.renderer.render(kind, context)
            assert_no_injected_header(to_bytes(build_message(rendered, draft)))


_POISONED_KEYS = {"number", "receipt_number", "reference", "name", "plan", "method", "reason"}


def _poisoned(value: Any, key: str = "") -> Any:
    """``value`` with INJECTED appended to every customer-controlled text in it."""
    if isinstance(value, dict):
        return {k: _poisoned(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_poisoned(v, key) for v in value]
    if isinstance(value, str) and key in _POISONED_KEYS | {"description"}:
        return value + INJECTED
    return value


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the database plays no part
async def test_a_tenant_subject_cannot_inject_a_header(
    relay_env: tuple[Services, MemoryTransport],
) -> None:
    services, _ = relay_env
    for source in (
        "Invoice {{ invoice.number }}\r\nBcc: evil@attacker.example",
        'Invoice {{ invoice.number }}{{ "\\r\\nBcc: evil@attacker.example" }}',
        'Invoice {{ invoice.number ~ "\\nX-Injected: 1" }}',
    ):
        with pytest.raises(TemplateError, match="line [12]: a subject must render to one line"):
            services.desk.save_template(
                "new_invoice", "subject", source, tenant="acme", updated_by="t"
            )
    assert services.desk.template_overrides("new_invoice", tenant="acme") == {}
