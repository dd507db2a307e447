"""Delivery preferences on the account page, through real HTTP (uvicorn), on SQLite and
PostgreSQL: a contact added or changed only once the link emailed to it is followed (signed,
expiring, single-use, in the customer's language), removed but never the last, PDF attached
or link only, the language of the next email and of the page; each change recorded with who
and when, shown to the clerk, and an ERP import that lists the same or other contacts
following the README's rule for a clerk's corrections. CSRF, the hourly limit, and a token
that can never reach another customer's contacts."""

from __future__ import annotations

import asyncio
import email
import re
from datetime import timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session, col, select

from dunmail.app import Services
from dunmail.services.preferences import CHANGES_PER_HOUR
from mailer.clock import FixedClock
from mailer.ledger.models import Contact, Customer, Invoice
from mailer.ledger.preference_models import ChangeKind, PreferenceChange
from mailer.outbound.links import issue_link
from mailer.outbound.memory import MemoryTransport
from mailer.outbound.models import Message, WebhookDelivery
from tests.portal_fixtures import FORM_SECRET, csrf_of, form_checkout, ledger, tenants, view_token


@pytest.fixture
def services_config(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("ACME_HOOK", "hook-secret")
    monkeypatch.setenv("ACME_PAY", FORM_SECRET)
    return tenants(tmp_path, db_url, form_checkout())


@pytest.fixture
def relay_env(services: Services, transport: MemoryTransport) -> tuple[Services, MemoryTransport]:
    assert services.ledger.import_document(ledger(), tenant="acme").errors == []
    return services, transport


def csrf_of_any(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None, page
    return found.group(1)


def _client(base: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base, follow_redirects=False)


def _parsed(data: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _text(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    return str(body.get_content())


def _contacts(services: Services, external_id: str = "C-1") -> list[str]:
    with Session(services.engine) as session:
        customer = session.exec(select(Customer).where(Customer.external_id == external_id)).one()
        rows = session.exec(
            select(Contact).where(Contact.customer_id == customer.id).order_by(col(Contact.id))
        )
        return [c.email for c in rows]


async def _page(client: httpx.AsyncClient, token: str) -> str:
    response = await client.get(f"/l/{token}/account/preferences")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "private, no-store"
    return response.text


async def _post(
    client: httpx.AsyncClient, token: str, fields: dict[str, str], *, csrf: str | None = None
) -> httpx.Response:
    if csrf is None:
        csrf = csrf_of(await _page(client, token))
    return await client.post(
        f"/l/{token}/account/preferences",
        data={"csrf": csrf, **fields},
        headers={"Origin": str(client.base_url).rstrip("/")},
    )


def _confirm_link(transport: MemoryTransport, address: str) -> tuple[str, EmailMessage]:
    mail = [m for m in transport.sent if address in m.recipients][-1]
    assert mail.recipients == (address,)  # to the new address only
    parsed = _parsed(mail.data)
    found = re.search(r"/l/([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)/confirm", _text(parsed))
    assert found is not None
    return found.group(1), parsed


async def _confirm(client: httpx.AsyncClient, confirm: str) -> httpx.Response:
    shown = await client.get(f"/l/{confirm}/confirm")
    assert shown.status_code == 200, shown.text
    return await client.post(
        f"/l/{confirm}/confirm",
        data={"csrf": csrf_of(shown.text)},
        headers={"Origin": str(client.base_url).rstrip("/")},
    )


async def test_an_added_contact_is_used_only_once_the_emailed_link_confirms_it_once(
    relay_env: tuple[Services, MemoryTransport], web_server: str, clock: FixedClock
) -> None:
    services, transport = relay_env
    token, _ = await view_token(services, transport)
    async with _client(web_server) as client:
        account = (await client.get(f"/l/{token}/account")).text
        assert f'href="/l/{token}/account/preferences"' in account
        page = await _page(client, token)
        assert "ap@globex.example" in page and "billing@globex.example" in page
        assert "ap@initech.example" not in page  # another customer's contact
        done = await _post(
            client,
            token,
            {"action": "add", "email": "new.ap@globex.example", "name": "Ann\r\nSmith"},
        )
        assert done.status_code == 303, done.text
        assert done.headers["location"].endswith("?done=requested")
        page = (await client.get(done.headers["location"])).text
        assert "We have emailed a confirmation link" in page
        assert 'id="pending"' in page and "new.ap@globex.example" in page
        # Not a contact yet: the next invoice email does not go there.
        assert "new.ap@globex.example" not in _contacts(services)
        confirm, mail = _confirm_link(transport, "new.ap@globex.example")
        assert mail["Subject"] == "Please confirm your email address for Acme Supplies"
        with Session(services.engine) as session:
            row = session.exec(select(Message).where(Message.kind == "contact_confirmation")).one()
            assert row.status.value == "sent" and row.language == "en"
        # Opening the link (a mail scanner does) confirms nothing; the button's POST does.
        shown = await client.get(f"/l/{confirm}/confirm")
        assert "Confirm this address" in shown.text
        assert "new.ap@globex.example" not in _contacts(services)
        confirmed = await _confirm(client, confirm)
        assert confirmed.status_code == 200
        assert "The address is confirmed" in confirmed.text
        assert _contacts(services)[-1] == "new.ap@globex.example"
        with Session(services.engine) as session:
            added = session.exec(
                select(Contact).where(Contact.email == "new.ap@globex.example")
            ).one()
            assert added.name == "Ann Smith" and added.roles == ["billing"]
        # Single use: the same link again is not valid.
        again = await client.get(f"/l/{confirm}/confirm")
        assert again.status_code == 404
        reposted = await client.post(
            f"/l/{confirm}/confirm",
            data={"csrf": csrf_of(shown.text)},
            headers={"Origin": web_server},
        )
        assert reposted.status_code == 404
        # Tampered links confirm nothing.
        payload, mac = confirm.split(".")
        assert (await client.get(f"/l/{payload}.{mac[:-2]}AA/confirm")).status_code == 404
        # Expired: a second request's link after 48 hours.
        await _post(client, token, {"action": "add", "email": "late@globex.example"})
        late, _ = _confirm_link(transport, "late@globex.example")
        clock.advance(timedelta(hours=48, seconds=1))
        assert (await client.get(f"/l/{late}/confirm")).status_code == 404
        assert "late@globex.example" not in _contacts(services)
        # The invoice email now goes to the confirmed address too.
    await services.sending.send_invoice("INV-1042", kind="invoice_reminder", tenant="acme")
    assert "new.ap@globex.example" in transport.sent[-1].recipients
    # Audited: requested by the customer through the View link of that email, then added.
    with Session(services.engine) as session:
        changes = session.exec(select(PreferenceChange).order_by(col(PreferenceChange.id))).all()
        kinds = [c.kind for c in changes]
        assert kinds[:2] == [ChangeKind.CONTACT_REQUESTED, ChangeKind.CONTACT_ADDED]
        assert changes[0].by.startswith("customer via the View link of email ")
        assert changes[1].by == "customer via the confirmation email to new.ap@globex.example"


async def test_addresses_are_validated_suppressed_ones_refused_and_the_last_never_removed(
    relay_env: tuple[Services, MemoryTransport], web_server: str
) -> None:
    services, transport = relay_env
    token, _ = await view_token(services, transport)
    services.suppressions.suppress(
        "gone@globex.example", tenant="acme", reason="bounced", by="clerk@acme.example"
    )
    sent = len(transport.sent)
    async with _client(web_server) as client:
        bad = await _post(client, token, {"action": "add", "email": "two@a.example, b@b.example"})
        assert bad.status_code == 422 and "Please enter one email address" in bad.text
        header = await _post(client, token, {"action": "add", "email": "x@a.example\r\nBcc: y@b"})
        assert header.status_code == 422
        blocked = await _post(client, token, {"action": "add", "email": "GONE@globex.example"})
        assert blocked.status_code == 422 and "We cannot send email to this address" in blocked.text
        same = await _post(client, token, {"action": "add", "email": "ap@globex.example"})
        assert same.status_code == 400 and "already one of your contacts" in same.text
        assert len(transport.sent) == sent  # nothing mailed for any of them
        removed = await _post(client, token, {"action": "remove", "contact": "ap@globex.example"})
        assert removed.status_code == 303
        assert _contacts(services) == ["billing@globex.example"]
        page = await _page(client, token)
        assert "Your only contact cannot be removed" in page
        assert 'name="action" value="remove"' not in page
        last = await _post(client, token, {"action": "remove", "contact": "billing@globex.example"})
        assert last.status_code == 400 and "You need at least one contact" in last.text
        assert _contacts(services) == ["billing@globex.example"]


async def test_a_token_reaches_its_own_customer_only(
    relay_env: tuple[Services, MemoryTransport], web_server: str
) -> None:
    services, transport = relay_env
    token, _ = await view_token(services, transport)
    async with _client(web_server) as client:
        # Customer C-2's contact, named in a form posted with C-1's token.
        theirs = await _post(client, token, {"action": "remove", "contact": "ap@initech.example"})
        assert theirs.status_code == 400 and "not on your account" in theirs.text
        change = await _post(
            client,
            token,
            {"action": "change", "contact": "ap@initech.example", "email": "evil@x.example"},
        )
        assert change.status_code == 400
        assert _contacts(services, "C-2") == ["ap@initech.example"]
        # A token of another tenant's key, or a garbled one, opens nothing.
        payload, mac = token.split(".")
        forged = f"{payload}.{mac[::-1]}"
        assert (await client.get(f"/l/{forged}/account/preferences")).status_code == 404
        refused = await client.post(
            f"/l/{forged}/account/preferences",
            data={"action": "remove", "contact": "ap@globex.example"},
        )
        assert refused.status_code == 404
        assert (await client.get("/l/not-a-token/confirm")).status_code == 404
        # A genuine View token of tenant beta that names acme's invoice reaches no account.
        with Session(services.engine) as session:
            invoice = session.exec(select(Invoice).where(Invoice.number == "INV-1042")).one()
        beta = issue_link(
            "view",
            services.tenants.id("beta"),
            f"invoice:{invoice.id}",
            invoice.version,
            key=services.links.signing,
            expires_at=services.clock.now() + timedelta(days=5),
        )
        assert (await client.get(f"/l/{beta}/account/preferences")).status_code == 404
        csrf = csrf_of(await _page(client, token))
        crossed = await _post(
            client, beta, {"action": "remove", "contact": "ap@globex.example"}, csrf=csrf
        )
        assert crossed.status_code in (403, 404)
        assert "ap@globex.example" in _contacts(services)
    with Session(services.engine) as session:
        other = session.exec(select(Customer).where(Customer.external_id == "C-2")).one()
        assert not session.exec(
            select(PreferenceChange).where(PreferenceChange.customer_id == other.id)
        ).all()


async def test_every_post_needs_the_csrf_token_and_the_same_origin_and_is_limited(
    relay_env: tuple[Services, MemoryTransport], web_server: str
) -> None:
    services, transport = relay_env
    token, _ = await view_token(services, transport)
    fields = {"action": "delivery", "pdf": "link", "language": "en"}
    async with _client(web_server) as client:
        csrf = csrf_of(await _page(client, token))
        forged = await _post(client, token, fields, csrf="0" * 64)
        assert forged.status_code == 403 and "This form has expired" in forged.text
        other_site = await client.post(
            f"/l/{token}/account/preferences",
            data={"csrf": csrf, **fields},
            headers={"Origin": "https://evil.example"},
        )
        assert other_site.status_code == 403
        with Session(services.engine) as session:
            assert not session.exec(select(Customer).where(Customer.pdf_link_only)).all()
        for n in range(CHANGES_PER_HOUR):
            pdf = "link" if n % 2 == 0 else "attach"
            done = await _post(client, token, {**fields, "pdf": pdf}, csrf=csrf)
            assert done.status_code == 303, done.text
        limited = await _post(client, token, fields, csrf=csrf)
        assert limited.status_code == 429 and "Too many changes" in limited.text


async def test_the_chosen_language_speaks_on_the_page_and_in_the_next_email(
    relay_env: tuple[Services, MemoryTransport], web_server: str
) -> None:
    services, transport = relay_env
    token, _ = await view_token(services, transport)
    async with _client(web_server) as client:
        page = await _page(client, token)
        assert re.search(r'<option value="fr" lang="fr">français</option>', page)
        assert '<option value="en" lang="en" selected>' in page
        assert '<option value="de" lang="de">Deutsch</option>' in page
        unknown = await _post(
            client, token, {"action": "delivery", "pdf": "attach", "language": "ja"}
        )
        assert unknown.status_code == 400
        done = await _post(client, token, {"action": "delivery", "pdf": "attach", "language": "fr"})
        assert done.status_code == 303
        page = (await client.get(done.headers["location"])).text
        assert 'lang="fr"' in page and "Préférences d’envoi" in page
        assert "Vos préférences ont été enregistrées." in page
        account = (await client.get(f"/l/{token}/account")).text
        assert "Votre compte" in account
        # The confirmation email goes out in French too.
        await _post(client, token, {"action": "add", "email": "fr@globex.example"})
        _, mail = _confirm_link(transport, "fr@globex.example")
        assert mail["Subject"] == "Veuillez confirmer votre adresse e-mail pour Acme Supplies"
    await services.sending.send_invoice("INV-1042", kind="invoice_reminder", tenant="acme")
    reminder = _parsed(transport.sent[-1].data)
    assert "Facture" in str(reminder["Subject"]) or "facture" in str(reminder["Subject"])
    # The ERP re-sends the same locale: the customer's choice stands; another: the ERP's wins.
    assert services.ledger.import_document(ledger(), tenant="acme").errors == []
    with Session(services.engine) as session:
        assert (
            session.exec(select(Customer).where(Customer.external_id == "C-1")).one().chosen_locale
            == "fr"
        )
    assert services.ledger.import_document(ledger(locale="es"), tenant="acme").errors == []
    with Session(services.engine) as session:
        c1 = session.exec(select(Customer).where(Customer.external_id == "C-1")).one()
        assert c1.chosen_locale is None and c1.locale == "es"


async def test_customer_changes_follow_the_clerk_rule_when_the_erp_imports_contacts(
    relay_env: tuple[Services, MemoryTransport], web_server: str
) -> None:
    services, transport = relay_env
    token, _ = await view_token(services, transport)
    async with _client(web_server) as client:
        await _post(
            client,
            token,
            {"action": "change", "contact": "ap@globex.example", "email": "ap2@globex.example"},
        )
        confirm, _ = _confirm_link(transport, "ap2@globex.example")
        assert (await _confirm(client, confirm)).status_code == 200
        await _post(client, token, {"action": "add", "email": "extra@globex.example"})
        confirm, _ = _confirm_link(transport, "extra@globex.example")
        assert (await _confirm(client, confirm)).status_code == 200
    assert _contacts(services) == [
        "ap2@globex.example",
        "billing@globex.example",
        "extra@globex.example",
    ]
    # The ERP still lists what it did: every change of the customer stands, and is reported.
    report = services.ledger.import_document(ledger(), tenant="acme")
    assert report.errors == []
    assert sorted(_contacts(services)) == [
        "ap2@globex.example",
        "billing@globex.example",
        "extra@globex.example",
    ]
    assert {(k.erp_email, k.email) for k in report.corrections_kept} == {
        ("ap@globex.example", "ap2@globex.example"),
        ("", "extra@globex.example"),
    }
    # The ERP lists other contacts: it has been updated, and its list is taken as it is.
    doc = ledger()
    doc["customers"][0]["contacts"] = [{"email": "new-erp@globex.example", "roles": ["billing"]}]
    report = services.ledger.import_document(doc, tenant="acme")
    assert report.errors == [] and report.corrections_kept == []
    assert _contacts(services) == ["new-erp@globex.example"]
    with Session(services.engine) as session:
        added = session.exec(
            select(PreferenceChange).where(PreferenceChange.kind == ChangeKind.CONTACT_ADDED)
        ).one()
        assert not added.standing and added.ended_at is not None


async def test_a_removal_stands_while_the_erp_lists_the_same_contacts(
    relay_env: tuple[Services, MemoryTransport], web_server: str
) -> None:
    services, transport = relay_env
    token, _ = await view_token(services, transport)
    async with _client(web_server) as client:
        assert (
            await _post(client, token, {"action": "remove", "contact": "ap@globex.example"})
        ).status_code == 303
    report = services.ledger.import_document(ledger(), tenant="acme")
    assert _contacts(services) == ["billing@globex.example"]
    assert [(k.erp_email, k.email) for k in report.corrections_kept] == [("ap@globex.example", "")]
    doc = ledger()
    doc["customers"][0]["contacts"].append({"email": "third@globex.example", "roles": ["ap"]})
    services.ledger.import_document(doc, tenant="acme")
    assert sorted(_contacts(services)) == [
        "ap@globex.example",
        "billing@globex.example",
        "third@globex.example",
    ]


async def test_the_clerk_sees_each_change_with_who_and_when(
    relay_env: tuple[Services, MemoryTransport], web_server: str
) -> None:
    services, transport = relay_env
    token, _ = await view_token(services, transport)
    async with _client(web_server) as client:
        await _post(client, token, {"action": "delivery", "pdf": "link", "language": "ro"})
        await _post(client, token, {"action": "remove", "contact": "ap@globex.example"})
    services.accounts.add_user(
        tenant_id=services.tenants.id("acme"),
        email="clerk@acme.example",
        name="Clerk",
        password="a-long-password-1",
    )
    with Session(services.engine) as session:
        c1 = session.exec(select(Customer).where(Customer.external_id == "C-1")).one()
    async with _client(web_server) as clerk:
        form = await clerk.get("/login")
        signed = await clerk.post(
            "/login",
            data={
                "email": "clerk@acme.example",
                "password": "a-long-password-1",
                "csrf": csrf_of_any(form.text),
                "next": "/inbox",
            },
        )
        assert signed.status_code in (302, 303), signed.text
        page = (await clerk.get(f"/inbox/customers/{c1.id}")).text
    assert 'id="preference-changes"' in page
    assert "link only" in page and "language chosen: <strong>ro" in page
    for words in (
        "pdf delivery",
        "language",
        "contact removed",
        "customer via the View link of email",
    ):
        assert words in page


async def test_two_clicks_at_once_confirm_once(
    relay_env: tuple[Services, MemoryTransport], web_server: str
) -> None:
    services, transport = relay_env
    token, _ = await view_token(services, transport)
    async with _client(web_server) as client:
        await _post(client, token, {"action": "add", "email": "twice@globex.example"})
        confirm, _ = _confirm_link(transport, "twice@globex.example")
        shown = await client.get(f"/l/{confirm}/confirm")
        data = {"csrf": csrf_of(shown.text)}
        headers = {"Origin": web_server}
        answers = await asyncio.gather(
            *(client.post(f"/l/{confirm}/confirm", data=data, headers=headers) for _ in range(4))
        )
    assert sorted(a.status_code for a in answers) == [200, 404, 404, 404]
    assert _contacts(services).count("twice@globex.example") == 1
    with Session(services.engine) as session:
        added = session.exec(
            select(PreferenceChange).where(PreferenceChange.kind == ChangeKind.CONTACT_ADDED)
        ).all()
        assert len(added) == 1


async def test_german_page_and_confirmation_email(
    relay_env: tuple[Services, MemoryTransport], web_server: str
) -> None:
    services, transport = relay_env
    token, _ = await view_token(services, transport)
    async with _client(web_server) as client:
        done = await _post(client, token, {"action": "delivery", "pdf": "link", "language": "de"})
        assert done.status_code == 303
        page = (await client.get(done.headers["location"])).text
        assert 'lang="de"' in page and "Versandeinstellungen" in page
        await _post(client, token, {"action": "add", "email": "buchhaltung@globex.example"})
        confirm, mail = _confirm_link(transport, "buchhaltung@globex.example")
        assert str(mail["Subject"]).startswith("Bitte bestätigen Sie Ihre E-Mail-Adresse")
        shown = await client.get(f"/l/{confirm}/confirm")
        assert 'lang="de"' in shown.text


async def test_each_applied_change_is_sent_to_the_erp_as_a_webhook(
    relay_env: tuple[Services, MemoryTransport], web_server: str
) -> None:
    services, transport = relay_env
    token, _ = await view_token(services, transport)
    async with _client(web_server) as client:
        await _post(client, token, {"action": "delivery", "pdf": "link", "language": "es"})
        await _post(
            client,
            token,
            {"action": "change", "contact": "ap@globex.example", "email": "ap2@globex.example"},
        )
        with Session(services.engine) as session:  # requested only: nothing for the ERP yet
            queued = session.exec(
                select(WebhookDelivery).where(
                    WebhookDelivery.event == "customer.preferences_changed"
                )
            ).all()
            assert len(queued) == 2
        confirm, _ = _confirm_link(transport, "ap2@globex.example")
        assert (await _confirm(client, confirm)).status_code == 200
    with Session(services.engine) as session:
        rows = session.exec(
            select(WebhookDelivery)
            .where(WebhookDelivery.event == "customer.preferences_changed")
            .order_by(col(WebhookDelivery.id))
        ).all()
    data = [r.payload["data"] for r in rows]
    assert [(d["change"], d["old"], d["new"]) for d in data] == [
        ("pdf_delivery", "attach", "link"),
        ("language", "en", "es"),
        ("contact_changed", "ap@globex.example", "ap2@globex.example"),
    ]
    assert {d["customer"] for d in data} == {"C-1"}
    assert data[2]["by"] == "customer via the confirmation email to ap2@globex.example"
    assert all(r.url == "https://erp.acme.example/hook" for r in rows)
