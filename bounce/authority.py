"""SERVICE: which outbound email an inbound message is about, and what it may act on.

Bounce authority (issue 14): the Message-ID, ``X-Dunmail-Message`` and ``In-Reply-To`` of our
emails are visible to every recipient, so anyone can name them; a VERP token
(mailer/outbound/verp.py)
is a secret of the (message, recipient) pair it was issued for. So:

* a valid token, at an address the mail *arrived at*, proves the message and gives authority
  over exactly the recipient it was issued for (a token from before per-recipient envelopes:
  over the message's only recipient, none when it had several);
* a uid named in the headers only threads the mail, and only inside a tenant whose address
  received it (its AR inbox, its own bounce domain, its IMAP mailbox), never across tenants.

Where the mail arrived: the SMTP envelope's recipients when it came by SMTP (the headers are
the sender's to write), else the delivery agent's topmost ``Delivered-To`` / ``X-Original-To``
/ ``Envelope-To`` (a file or an IMAP mailbox), else ``To``. An IMAP mailbox belongs to one
tenant: a token found there counts only at that tenant's bounce domain and for its own email.
"""

from __future__ import annotations

import email.errors
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.utils import getaddresses

from sqlmodel import Session, col, select

from bounce.report import Kind, Report
from mailer.errors import LinkInvalid
from mailer.inbox_models import InboundMail
from mailer.outbound.models import Message, MessageRecipient
from mailer.outbound.verp import verify_verp, verp_uid

_UID = re.compile(r"^[0-9a-f]{8,32}$")
# A Message-ID of ours is <uid@domain> (mailer/outbound/compose.py::message_id).
_OUR_MESSAGE_ID = re.compile(r"^<?(?P<uid>[0-9a-f]{8,32})@[^>\s]+>?$", re.IGNORECASE)
# bounce/imap.py names what it stores "imap:<tenant slug>/<mailbox>/<uidvalidity>:<uid>".
_IMAP_SOURCE = re.compile(r"^imap:(?P<slug>[^/]+)/")
# What a delivery agent writes on top of a message it files (Postfix, Exim, Dovecot).
_ARRIVAL_HEADERS = ("delivered-to", "x-original-to", "envelope-to")
# RFC 5965 s3.2: an ARF report's envelope sender of the complained-about message, our VERP.
_ORIGINAL_MAIL_FROM = re.compile(rb"^original-mail-from:[ \t]*<?([^<>\s]+@[^<>\s]+)>?", re.I | re.M)

VERIFIED = "verp"  # InboundMail.matched_by of the only match that may act


@dataclass(frozen=True)
class Mailboxes:
    """Which tenant each of our receiving addresses belongs to (from the configuration)."""

    inboxes: Mapping[str, int] = field(default_factory=dict)  # AR inbox -> tenant id
    bounce_domains: Mapping[str, frozenset[int]] = field(default_factory=dict)  # -> tenants
    slugs: Mapping[str, int] = field(default_factory=dict)  # tenant slug -> id (IMAP)


@dataclass(frozen=True)
class Arrival:
    """Where one inbound message arrived: its VERP addresses and the tenants it reached."""

    verps: tuple[str, ...]
    tenants: frozenset[int]
    mailbox_of: int | None = None  # the tenant whose IMAP mailbox held it


@dataclass(frozen=True)
class Match:
    """The email a report is about (None: unmatched, ``why`` says so), how it was found, and
    the recipients (lower case) it may act on: empty unless a VERP token proved them."""

    message: Message | None
    matched_by: str | None = None
    authority: frozenset[str] = frozenset()
    why: str | None = None
    tenant_id: int | None = None  # the receiving tenant, when one is known (also unmatched)


def arrival_of(inbound: InboundMail, mailboxes: Mailboxes, *, kind: Kind) -> Arrival:
    """Where ``inbound`` arrived: its envelope, else its delivery headers (module docstring).

    A complaint (RFC 5965) reaches a feedback-loop address, not the VERP one, but names the
    original's envelope sender in ``Original-Mail-From``: a valid token there proves the
    message and recipient just as well (only that recipient's provider has it).
    """
    imap = _IMAP_SOURCE.match(inbound.source)
    mailbox_of = mailboxes.slugs.get(imap["slug"]) if imap else None
    if inbound.recipients is not None:
        addresses = list(inbound.recipients)
    else:
        addresses = _header_addresses(inbound.raw)
    if kind is Kind.COMPLAINT:
        found = _ORIGINAL_MAIL_FROM.search(inbound.raw[:200_000])
        if found:
            addresses.append(found[1].decode("ascii", "replace").strip().lower())
    verps, tenants = [], set()
    for address in addresses:
        local, _, domain = address.rpartition("@")
        if address in mailboxes.inboxes:
            tenants.add(mailboxes.inboxes[address])
            continue
        try:
            verp_uid(address)
        except LinkInvalid:
            continue
        owners = mailboxes.bounce_domains.get(domain, frozenset())
        if mailbox_of is not None and mailbox_of not in owners:
            continue  # not this tenant's bounce domain: a token it has no business holding
        verps.append(address)
        if len(owners) == 1:  # a tenant's own bounce domain says who received it
            tenants |= owners
    if mailbox_of is not None:
        tenants = {mailbox_of}
    return Arrival(verps=tuple(verps), tenants=frozenset(tenants), mailbox_of=mailbox_of)


def _header_addresses(raw: bytes) -> list[str]:
    """The topmost arrival header of each kind, else ``To``: lower-cased addresses."""
    try:
        headers = BytesHeaderParser().parsebytes(raw)
        values = [str(headers[name]) for name in _ARRIVAL_HEADERS if headers[name] is not None]
        if not values:
            values = [str(v) for v in headers.get_all("To") or []]
    except (email.errors.MessageError, ValueError, TypeError):
        return []
    return [a.strip().lower() for _, a in getaddresses(values) if "@" in a]


def match_report(
    session: Session, report: Report, inbound: InboundMail, arrival: Arrival, *, verp_key: bytes
) -> Match:
    """The outbound message ``report`` is about, and the recipients it may act on.

    RFC 3464 s2.3.1 leaves the original recipient optional, so the envelope (VERP) is the most
    reliable handle; a VERP token that fails its HMAC is a forgery and ends the search.
    """
    receiver = next(iter(arrival.tenants)) if len(arrival.tenants) == 1 else None
    if report.kind in (Kind.NOT_BOUNCE, Kind.AUTO_REPLY):
        # A person's (or their autoresponder's) answer names our email in its threading
        # headers (RFC 5322 s3.6.4); it has no VERP token and acts on nothing.
        for candidate in thread_references(inbound.raw):
            found = _by_uid(session, candidate, tenants=arrival.tenants)
            if found is not None:
                return Match(found, "in-reply-to", tenant_id=found.tenant_id)
        if report.kind is Kind.NOT_BOUNCE:
            why = "not a bounce, and not a reply to an email of the tenant that received it"
            return Match(None, why=why, tenant_id=receiver)
    verified = _by_verp(session, arrival, verp_key=verp_key)
    if verified is not None:
        return verified
    tenants = arrival.tenants
    if not tenants:
        why = "no valid VERP token, and received at no tenant's address: not threaded"
        return Match(None, why=why)
    named = (report.dunmail_id or "").strip().lower()
    if _UID.match(named):
        found = _by_uid(session, named, tenants=tenants)
        if found is not None:
            return Match(found, "header", tenant_id=found.tenant_id)
    ours = _OUR_MESSAGE_ID.match((report.original_message_id or "").strip())
    if ours:
        found = _by_uid(session, ours["uid"].lower(), tenants=tenants)
        if found is not None:
            return Match(found, "message-id", tenant_id=found.tenant_id)
    why = "no email of the tenant that received it matches"
    return Match(None, why=why, tenant_id=receiver)


def _by_verp(session: Session, arrival: Arrival, *, verp_key: bytes) -> Match | None:
    """The message the arrival's VERP tokens prove, with the recipients they prove; a forged
    token is an unmatched result; None when no token names a message of ours."""
    message: Message | None = None
    authority: set[str] = set()
    for address in arrival.verps:
        found = _by_uid(session, verp_uid(address), tenants=None)
        if found is None or found.id is None:
            continue
        if arrival.mailbox_of is not None and found.tenant_id != arrival.mailbox_of:
            continue  # another tenant's email in this tenant's mailbox: a replayed token
        if message is not None and found.id != message.id:
            continue  # one message per inbound mail: the first one proved
        sent_to = sent_to_of(session, found.id)
        try:
            proved = verify_verp(address, key=verp_key, recipients=sent_to.values())
        except LinkInvalid as exc:
            return Match(None, why=f"VERP {address}: {exc}", tenant_id=None)
        message = found
        if proved.recipient is not None:
            authority.add(proved.recipient)
        elif len(sent_to) == 1:
            authority |= set(sent_to)  # an old message-level token of a one-recipient email
    if message is None:
        return None
    if authority:
        return Match(message, VERIFIED, frozenset(authority), tenant_id=message.tenant_id)
    # A message-level token of an email to several recipients cannot say whom it is about.
    return Match(message, "verp-shared", tenant_id=message.tenant_id)


def sent_to_of(session: Session, message_id: int) -> dict[str, str]:
    """The addresses an email was sent to: lower case -> as stored."""
    rows = session.exec(
        select(MessageRecipient.address).where(MessageRecipient.message_id == message_id)
    ).all()
    return {address.lower(): address for address in rows}


def thread_references(raw: bytes) -> list[str]:
    """Our uids named in In-Reply-To and References, the direct parent first."""
    try:
        headers = BytesHeaderParser().parsebytes(raw)
        named = [str(headers.get("In-Reply-To") or "")]
        named += reversed(str(headers.get("References") or "").split())
    except (email.errors.MessageError, ValueError, TypeError):
        return []
    uids = []
    for value in named:
        for token in re.findall(r"<[^<>\s]+>", value):
            ours = _OUR_MESSAGE_ID.match(token)
            if ours and ours["uid"].lower() not in uids:
                uids.append(ours["uid"].lower())
    return uids


def _by_uid(session: Session, uid: str, *, tenants: Collection[int] | None) -> Message | None:
    """The message ``uid``; with ``tenants``, only one of theirs (never another tenant's)."""
    query = select(Message).where(Message.uid == uid)
    if tenants is not None:
        if not tenants:
            return None
        query = query.where(col(Message.tenant_id).in_(list(tenants)))
    return session.exec(query).first()
