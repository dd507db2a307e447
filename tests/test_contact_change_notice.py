"""The notice of a change made on the account page, on SQLite and PostgreSQL, through real
HTTP (uvicorn) and the real mailer: a contact added (once confirmed), changed or removed, or
the PDF delivery switched, queues exactly one ``contacts_changed`` email to the contacts as
they were before the change (the removed address included, the new one never), in the
customer's language, saying what changed and when and whom to tell if it was not them; a
double submit and a retry queue one; it carries no link and no token."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, col, select

from dunmail.app import Services
from dunmail.services.contact_notice import queue_change_notice
from mailer.ledger.models import Customer
from mailer.ledger.preference_models import ChangeKind, PreferenceChange
from mailer.outbound.memory import MemoryTransport, SentMail
from mailer.outbound.models import Message, MessageRecipient
from tests.portal_fixtures import FORM_SECRET, csrf_of, form_checkout, ledger, tenants, view_token
from tests.test_portal_preferences import (
    _client,
    _confirm,
    _confirm_link,
    _page,
    _parsed,
    _post,
    _text,
)

NOTICE = "contacts_changed"
BEFORE = ["ap@globex.example", "billing@globex.example"]  # C-1's contacts in the ledger


@pytest.fixture
def services_config(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("ACME_HOOK", "hook-secret")
    monkeypatch.setenv("ACME_PAY", FORM_SECRET)
    return tenants(tmp_path, db_url, form_checkout())


@pytest.fixture
def relay_env(services: Services, transport: MemoryTransport) -> tuple[Services, MemoryTransport]:
    assert services.ledger.import_document(ledger(), tenant="acme").errors == []
    return services, transport


def _speaks(services: Services, locale: str) -> None:
    """The ERP says the customer reads ``locale``."""
    assert services.ledger.import_document(ledger(locale=locale), tenant="acme").errors == []


def _notices(services: Services) -> list[tuple[Message, list[str]]]:
    """Every queued notice with its recipients' addresses, oldest first."""
    with Session(services.engine) as session:
        rows = session.exec(
            select(Message).where(Message.kind == NOTICE).order_by(col(Message.id))
        ).all()
        return [
            (
                row,
                sorted(
                    r.address
                    for r in session.exec(
                        select(MessageRecipient).where(MessageRecipient.message_id == row.id)
                    )
                ),
            )
            for row in rows
        ]


async def _delivered(
    services: Services, transport: MemoryTransport
) -> tuple[list[str], SentMail, EmailMessage]:
    """Run the outbox once (the worker's pass): who the notice reached (the relay sends each
    recipient its own copy, for VERP), and the first copy, parsed."""
    before = len(transport.sent)
    await services.sending.dispatcher.deliver_due()
    sent = transport.sent[before:]
    assert sent
    parsed = [_parsed(m.data) for m in sent]
    assert len({str(p["Message-ID"]) for p in parsed}) == 1  # one email
    return sorted(a for m in sent for a in m.recipients), sent[0], parsed[0]


def _html(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("html",))
    assert body is not None
    return str(body.get_content())


def _no_link_in(mail: SentMail, message: EmailMessage, *tokens: str) -> None:
    """The notice names no link and no token: nothing to click, nothing to steal."""
    raw = mail.data.decode("utf-8", "replace")
    for token in tokens:
        assert token not in raw and token.split(".")[1] not in raw
    assert "/l/" not in _text(message) and "/l/" not in _html(message)


async def test_a_confirmed_addition_and_a_change_are_told_to_the_contacts_before_them(
    relay_env: tuple[Services, MemoryTransport], web_server: str
) -> None:
    services, transport = relay_env
    token, _ = await view_token(services, transport)
    async with _client(web_server) as client:
        await _post(client, token, {"action": "add", "email": "mallory@evil.example"})
        assert _notices(services) == []  # asked for only: nothing has changed yet
        confirm, _ = _confirm_link(transport, "mallory@evil.example")
        assert (await _confirm(client, confirm)).status_code == 200
        # A second click on the used link changes nothing and tells nobody again.
        shown = await client.get(f"/l/{confirm}/confirm")
        assert shown.status_code == 404
        notices = _notices(services)
        assert len(notices) == 1
        row, recipients = notices[0]
        assert recipients == BEFORE  # the contacts before it, not the new address
        assert row.language is None or row.language == "en"
        reached, mail, message = await _delivered(services, transport)
        assert reached == BEFORE
        assert message["Subject"] == "A change to your account with Acme Supplies"
        assert "ar@acme.example" in str(message["Reply-To"] or message["From"])
        text = " ".join(_text(message).split())
        assert "mallory@evil.example was added as a contact" in text
        assert "made on the account page" in text
        assert "If this was not you, reply to this email or contact Acme Supplies at" in text
        assert "ar@acme.example" in text
        assert "The change was made on " in text and "(UTC)" in text
        assert "<strong>mallory@evil.example</strong> was added" in _html(message)
        _no_link_in(mail, message, token, confirm)
        # A change: told to the contacts then (the replaced address too), not to the new one.
        await _post(
            client,
            token,
            {"action": "change", "contact": "billing@globex.example", "email": "b2@globex.example"},
        )
        confirm2, _ = _confirm_link(transport, "b2@globex.example")
        assert (await _confirm(client, confirm2)).status_code == 200
    notices = _notices(services)
    assert len(notices) == 2
    assert notices[1][1] == [*BEFORE, "mallory@evil.example"]
    reached, mail, message = await _delivered(services, transport)
    assert reached == [*BEFORE, "mallory@evil.example"]
    text = " ".join(_text(message).split())
    assert "The contact billing@globex.example was replaced by b2@globex.example." in text
    _no_link_in(mail, message, token, confirm2)


async def test_a_removal_is_told_once_to_every_contact_there_was_in_their_language(
    relay_env: tuple[Services, MemoryTransport], web_server: str
) -> None:
    services, transport = relay_env
    _speaks(services, "de")
    token, _ = await view_token(services, transport)
    async with _client(web_server) as client:
        csrf = csrf_of(await _page(client, token))
        fields = {"action": "remove", "contact": "ap@globex.example"}
        # A double click: both posts at once, one removes, the other finds nothing to remove.
        answers = await asyncio.gather(
            _post(client, token, fields, csrf=csrf), _post(client, token, fields, csrf=csrf)
        )
        assert sorted(a.status_code for a in answers) == [303, 400]
        again = await _post(client, token, fields, csrf=csrf)
        assert again.status_code == 400
    notices = _notices(services)
    assert len(notices) == 1
    assert notices[0][1] == BEFORE  # the removed address is told too
    reached, mail, message = await _delivered(services, transport)
    assert reached == BEFORE
    assert message["Subject"] == "Eine Änderung an Ihrem Konto bei Acme Supplies"
    text = " ".join(_text(message).split())
    assert "ap@globex.example wurde aus den Kontakten entfernt" in text
    assert "Wenn Sie das nicht waren, antworten Sie auf diese E-Mail" in text
    assert "Die Änderung wurde am " in text
    _no_link_in(mail, message, token)
    # Nothing reaches another customer's contacts.
    assert all("ap@initech.example" not in r for _, r in _notices(services))


async def test_a_pdf_delivery_change_is_told_once_in_the_language_before_it(
    relay_env: tuple[Services, MemoryTransport], web_server: str
) -> None:
    services, transport = relay_env
    _speaks(services, "fr")
    token, _ = await view_token(services, transport)
    async with _client(web_server) as client:
        csrf = csrf_of(await _page(client, token))
        link = {"action": "delivery", "pdf": "link", "language": "fr"}
        answers = await asyncio.gather(
            _post(client, token, link, csrf=csrf), _post(client, token, link, csrf=csrf)
        )
        assert [a.status_code for a in answers] == [303, 303]  # the second: nothing to change
        assert len(_notices(services)) == 1
        reached, mail, message = await _delivered(services, transport)
        assert reached == BEFORE
        assert message["Subject"] == "Une modification de votre compte chez Acme Supplies"
        text = " ".join(_text(message).split())
        assert "Les PDF ne sont plus joints aux e-mails" in text
        assert "Si ce n’était pas vous, répondez à cet e-mail" in text
        _no_link_in(mail, message, token)
        # A language alone is not a notice; PDFs back with another language: told in the
        # language the contacts read until then.
        await _post(client, token, {"action": "delivery", "pdf": "link", "language": "es"})
        assert len(_notices(services)) == 1
        await _post(client, token, {"action": "delivery", "pdf": "attach", "language": "de"})
    assert len(_notices(services)) == 2
    _, _, message = await _delivered(services, transport)
    assert message["Subject"] == "Un cambio en su cuenta con Acme Supplies"
    assert "Los PDF vuelven a adjuntarse a los correos" in " ".join(_text(message).split())


async def test_a_retry_of_the_same_change_queues_the_notice_once(
    relay_env: tuple[Services, MemoryTransport], web_server: str
) -> None:
    services, transport = relay_env
    token, _ = await view_token(services, transport)
    async with _client(web_server) as client:
        await _post(client, token, {"action": "remove", "contact": "ap@globex.example"})
    first = _notices(services)
    assert len(first) == 1
    with Session(services.engine) as session:
        change = session.exec(
            select(PreferenceChange).where(PreferenceChange.kind == ChangeKind.CONTACT_REMOVED)
        ).one()
        customer = session.get(Customer, change.customer_id)
        assert customer is not None
        again = queue_change_notice(
            services,
            session,
            customer,
            change,
            before=BEFORE,
            now=services.clock.now(),
            old="ap@globex.example",
        )
        assert again is not None and again.id == first[0][0].id
        session.commit()
    assert len(_notices(services)) == 1
