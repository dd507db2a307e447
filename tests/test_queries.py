"""A customer's query on an invoice (dunmail/services/queries.py, query_desk.py), on SQLite and
PostgreSQL: it holds the invoice in the same transaction (a dunning pass then queues no reminder
for it while it does for the invoice beside it), the clerk's answer is a real email in the
customer's language, resolving lifts the hold and chasing resumes; a link of one customer never
reaches another customer's or tenant's invoice; files are checked by their bytes."""

from __future__ import annotations

import email
from datetime import timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, col, select

from dunmail.app import Services
from dunmail.services import queries, query_desk
from dunmail.web.link_service import open_link
from mailer.clock import FixedClock
from mailer.errors import NotFoundError
from mailer.inbox_models import Thread
from mailer.ledger.models import Hold, HoldReason, Invoice
from mailer.outbound.links import issue_link
from mailer.outbound.memory import MemoryTransport
from mailer.outbound.models import Message
from mailer.query_models import InvoiceQuery, QueryAttachment
from tests.portal_fixtures import form_checkout, ledger, tenants, view_token

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


@pytest.fixture
def services_config(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("ACME_HOOK", "hook-secret")
    monkeypatch.setenv("ACME_PAY", "pay-secret")
    return tenants(tmp_path, db_url, form_checkout())


@pytest.fixture
def env(services: Services, transport: MemoryTransport) -> tuple[Services, MemoryTransport]:
    assert services.ledger.import_document(ledger(), tenant="acme").errors == []
    return services, transport


def _invoice(services: Services, number: str) -> Invoice:
    with Session(services.engine) as session:
        return session.exec(select(Invoice).where(Invoice.number == number)).one()


def _reminders(services: Services, invoice: Invoice) -> list[str]:
    with Session(services.engine) as session:
        return list(
            session.exec(
                select(Message.kind).where(
                    Message.invoice_id == invoice.id,
                    col(Message.kind).in_(["invoice_reminder", "late_payment_reminder"]),
                )
            ).all()
        )


async def test_a_query_holds_the_invoice_at_once_the_answer_is_emailed_and_resolve_resumes(
    env: tuple[Services, MemoryTransport],
) -> None:
    services, transport = env
    token, _ = await view_token(services, transport)
    opened = open_link(services, token)
    assert isinstance(services.clock, FixedClock)
    services.clock.advance(timedelta(minutes=10))  # past the new-invoice grace
    await services.dunning.tick()  # each invoice's first email
    disputed = _invoice(services, "INV-1052")  # due 5 March: a reminder from 6 March on
    raised = queries.raise_query(
        services,
        opened,
        invoice_id=disputed.id or 0,
        reason="wrong_amount",
        text="Line 1 was billed twice.\r\nPlease correct it.",
        upload=queries.Upload("../../etc/remittance advice.pdf", PDF),
    )
    assert isinstance(raised, queries.Raised) and raised.new
    with Session(services.engine) as session:
        hold = session.get(Hold, raised.hold_id)
        assert hold is not None and hold.reason is HoldReason.DISPUTE
        assert hold.invoice_id == disputed.id and hold.lifted_at is None
        thread = session.get(Thread, raised.thread_id)
        assert thread is not None and thread.document == f"invoice:{disputed.id}"
        stored = session.exec(select(QueryAttachment)).one()
        assert (stored.filename, stored.content_type, stored.data) == (
            "remittance_advice.pdf",
            "application/pdf",
            PDF,
        )
    # Day by day past its due date: the passes queue nothing for the disputed invoice.
    for _ in range(5):
        services.clock.advance(timedelta(days=1))
        await services.dunning.tick()
    assert _reminders(services, disputed) == []
    (planned,) = [
        e for e in services.dunning.plan(tenant="acme", everything=True) if e.document == "INV-1052"
    ]
    assert planned.action is None and "hold" in planned.reason, planned
    # A second message adds to the open query: no second query, no second hold.
    again = queries.raise_query(
        services, opened, invoice_id=disputed.id or 0, reason="other", text="Any news?"
    )
    assert isinstance(again, queries.Raised) and not again.new
    assert again.query_id == raised.query_id and again.hold_id == raised.hold_id

    sent_before = len(transport.sent)
    back = await query_desk.answer(
        services,
        raised.query_id,
        "You are right: a credit note <b>follows</b>.",
        tenant="acme",
        by="ana@acme.example",
    )
    assert back == raised.thread_id
    answers = transport.sent[sent_before:]
    assert answers, "the answer was not delivered"
    parsed = email.message_from_bytes(answers[0].data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed["Subject"] == "Your query about invoice INV-1052: our answer"
    html_part, text_part = (parsed.get_body(preferencelist=(k,)) for k in ("html", "plain"))
    assert html_part is not None and text_part is not None
    assert "&lt;b&gt;follows&lt;/b&gt;" in html_part.get_content()  # escaped in the HTML
    assert "a credit note <b>follows</b>." in text_part.get_content()
    assert "Any news?" in text_part.get_content()  # the customer's latest message
    (view,) = queries.customer_queries(services, opened) or []
    assert [s.kind for s in view.steps] == ["message", "message", "answer"]
    assert view.steps[0].files[0][1] == "remittance_advice.pdf"
    assert [v.id for v in query_desk.thread_queries(services, raised.thread_id, tenant="acme")] == [
        raised.query_id
    ]

    query_desk.resolve(services, raised.query_id, tenant="acme", by="ana@acme.example")
    with Session(services.engine) as session:
        lifted = session.get(Hold, raised.hold_id)
        assert lifted is not None and lifted.lifted_at is not None
        done = session.get(InvoiceQuery, raised.query_id)
        assert done is not None and done.status == "resolved"
    (view,) = queries.customer_queries(services, opened) or []
    assert [s.kind for s in view.steps][-1] == "resolved"
    (planned,) = [
        e for e in services.dunning.plan(tenant="acme", everything=True) if e.document == "INV-1052"
    ]
    assert planned.reason.startswith("late_payment_reminder") and planned.next_at, planned
    services.clock.advance(planned.next_at - services.clock.now() + timedelta(minutes=1))
    await services.dunning.tick()  # Monday, in the send window
    assert _reminders(services, disputed) == ["late_payment_reminder"]  # chasing resumed


async def test_a_link_reaches_only_its_own_customers_invoices_and_tenant(
    env: tuple[Services, MemoryTransport],
) -> None:
    services, transport = env
    token, _ = await view_token(services, transport)
    opened = open_link(services, token)
    theirs, mine = _invoice(services, "INV-2001"), _invoice(services, "INV-1042")
    refused = queries.raise_query(
        services, opened, invoice_id=theirs.id or 0, reason="other", text="hello"
    )
    assert refused is queries.Refusal.FOREIGN
    assert (
        queries.raise_query(services, opened, invoice_id=999999, reason="other", text="x")
        is queries.Refusal.FOREIGN
    )
    # beta's token naming acme's invoice grants no account at all.
    beta = issue_link(
        "view",
        services.tenants.id("beta"),
        f"invoice:{mine.id}",
        mine.version,
        key=services.links.signing,
        expires_at=services.clock.now() + timedelta(days=1),
    )
    other = open_link(services, beta)
    assert (
        queries.raise_query(services, other, invoice_id=mine.id or 0, reason="other", text="x")
        is None
    )
    assert queries.customer_queries(services, other) is None
    raised = queries.raise_query(
        services,
        opened,
        invoice_id=mine.id or 0,
        reason="already_paid",
        text="Paid on 1 March",
        upload=queries.Upload("proof.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 64),
    )
    assert isinstance(raised, queries.Raised)
    with Session(services.engine) as session:
        assert session.exec(select(InvoiceQuery)).all()[0].invoice_id == mine.id
        file_id = session.exec(select(QueryAttachment.id)).one() or 0
    # Another tenant's clerk finds none of it.
    with pytest.raises(NotFoundError):
        query_desk.thread_queries(services, raised.thread_id, tenant="beta")
    with pytest.raises(NotFoundError):
        await query_desk.answer(services, raised.query_id, "hi", tenant="beta", by="x@beta.example")
    with pytest.raises(NotFoundError):
        query_desk.resolve(services, raised.query_id, tenant="beta", by="x@beta.example")
    with pytest.raises(NotFoundError):
        query_desk.attachment(services, file_id, tenant="beta")
    assert query_desk.attachment(services, file_id, tenant="acme").content_type == "image/png"
    with Session(services.engine) as session:  # the refused calls changed nothing
        hold = session.get(Hold, raised.hold_id)
        assert hold is not None and hold.lifted_at is None


def test_files_are_judged_by_their_bytes_and_names_are_cleaned() -> None:
    html = queries.Upload("invoice.pdf", b"<html><script>alert(1)</script>")
    assert queries.checked_file(html) is queries.Refusal.FILE_TYPE
    svg = queries.Upload("x.png", b"<svg xmlns='http://www.w3.org/2000/svg'/>")
    assert queries.checked_file(svg) is queries.Refusal.FILE_TYPE
    big = queries.Upload("big.pdf", b"%PDF-" + b"0" * queries.MAX_ATTACHMENT_BYTES)
    assert queries.checked_file(big) is queries.Refusal.FILE_SIZE
    jpeg = queries.Upload('C:\\Users\\me\\"scan" <1>.JPEG', b"\xff\xd8\xff\xe0" + b"\0" * 10)
    assert queries.checked_file(jpeg) == ("image/jpeg", "scan_1.jpg")
    assert queries.checked_file(queries.Upload("", PDF)) == ("application/pdf", "attachment.pdf")
    assert queries.checked_text(" \r\n ") is queries.Refusal.EMPTY
    assert queries.checked_text("a" * (queries.MAX_TEXT_CHARS + 1)) is queries.Refusal.TOO_LONG
    assert queries.checked_text("one\r\ntwo\x00\x1b") == "one\ntwo"


async def test_messages_are_limited_per_customer_per_hour(
    env: tuple[Services, MemoryTransport],
) -> None:
    services, transport = env
    token, _ = await view_token(services, transport)
    opened = open_link(services, token)
    invoice = _invoice(services, "INV-1042")
    for n in range(queries.MESSAGES_PER_HOUR):
        taken = queries.raise_query(
            services, opened, invoice_id=invoice.id or 0, reason="other", text=f"message {n}"
        )
        assert isinstance(taken, queries.Raised)
    limited = queries.raise_query(
        services, opened, invoice_id=invoice.id or 0, reason="other", text="one more"
    )
    assert limited is queries.Refusal.LIMITED
    assert isinstance(services.clock, FixedClock)
    services.clock.advance(timedelta(hours=1, seconds=1))
    assert isinstance(
        queries.raise_query(
            services, opened, invoice_id=invoice.id or 0, reason="other", text="later"
        ),
        queries.Raised,
    )
