"""The send benchmark's workload: an ERP document, a config aimed at the sink, the databases."""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from bench._sink import Address, Sink
from dunmail.app import Services
from dunmail.config import Config
from mailer.content.context import invoice_context
from mailer.content.kinds import KINDS
from mailer.db import session_scope
from mailer.dunning_config import WEEKDAYS
from mailer.ledger.models import Customer, Invoice, Tenant
from mailer.ledger.queries import contacts_by_customer
from mailer.outbound.models import DeliveryAttempt, Message, MessageRecipient, MessageStatus
from mailer.outbound.requests import EnqueueRequest

PG_ADMIN_URL = os.environ.get(
    "DUNMAIL_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
CONNECTIONS = 16  # pooled relay connections, and the raw loop's workers
TENANT = "bench"
UNLIMITED = 100_000_000  # messages a minute: far above anything reachable, so nothing throttles


# --- the workload ------------------------------------------------------------------------------


def make_document(invoices: int, customers: int) -> dict[str, Any]:
    """An ERP import: ``customers`` with one contact each (own domain), ``invoices`` over them."""
    today = date.today()
    issued, due = (today - timedelta(days=10)).isoformat(), (today + timedelta(days=20)).isoformat()
    lines = [
        {"description": "Support hours, March", "quantity": "12", "unit_price": "95.00"},
        {"description": "Hosting, standard plan", "quantity": "1", "unit_price": "249.00"},
        {"description": "Travel expenses", "quantity": "1", "unit_price": "86.40"},
    ]
    return {
        "customers": [
            {
                "id": f"C-{c:04d}",
                "name": f"Customer {c:04d} Trading Ltd",
                "locale": "en",
                "time_zone": "UTC",
                "contacts": [
                    {"email": f"ap@customer{c:04d}.example", "name": "Accounts", "roles": ["ap"]}
                ],
            }
            for c in range(customers)
        ],
        "invoices": [
            {
                "id": f"i-{i:06d}",
                "number": f"INV-{i:06d}",
                "customer": f"C-{i % customers:04d}",
                "currency": "EUR",
                "issued_at": issued,
                "due_at": due,
                "status": "open",
                "lines": lines,
            }
            for i in range(invoices)
        ],
    }


def make_config(
    workdir: Path,
    db_url: str,
    sink: Sink | Address | None,
    *,
    connections: int = CONNECTIONS,
    pdfs: bool = False,
) -> Config:
    """One relay tenant at the sink, DKIM rsa-sha256, ``connections`` pooled (16), no effective
    rate limit, and no PDF attached unless ``pdfs``. Worker processes rebuild the same config
    from the URL, workdir and address.
    """
    emails = {} if pdfs else {k: {"attach_pdf": False} for k, s in KINDS.items() if s.pdf}
    return Config(
        env="dev",
        database={"url": db_url},
        relay={
            "host": sink.host if sink else "127.0.0.1",
            "port": sink.port if sink else 25,
            "domain": "bench.example",  # From's domain: the tenant's key aligns with it
            "max_connections": connections,
            "local_hostname": "bench.localhost",
        },
        delivery={"batch_size": 500, "domain_rate_per_minute": UNLIMITED},
        tenants={
            TENANT: {
                "name": "Bench Supplies Ltd",
                "email": "ar@bench.example",
                "rate_per_minute": UNLIMITED,
                # The queued reminders go whenever the bench runs, not in office hours only.
                "dunning": {"window": "00:00-24:00", "business_days": list(WEEKDAYS)},
                "emails": emails,
                "dkim": [
                    {
                        "domain": "bench.example",
                        "selector": "s1",
                        "key_file": str(workdir / "dkim-s1.pem"),
                    }
                ],
            }
        },
    )


def enqueue_invoice_emails(services: Services, kind: str = "invoice_reminder") -> int:
    """Enqueue a ``kind`` email for every invoice in one transaction, as a dunning pass does:
    contacts read for a batch of customers at once, the emails written by ``Queue.enqueue_many``
    in batches of 500 (scheduler/triggers.py's ``enqueue_batch`` shape)."""
    tenant_id = services.tenants.id(TENANT)
    now = services.clock.now()
    with session_scope(services.engine) as session:
        tenant = session.get(Tenant, tenant_id)
        if tenant is None:
            raise SystemExit("the bench tenant is missing")
        customers = {
            c.id: c
            for c in session.exec(select(Customer).where(col(Customer.tenant_id) == tenant_id))
        }
        invoices = session.exec(
            select(Invoice).where(col(Invoice.tenant_id) == tenant_id).order_by(col(Invoice.id))
        ).all()
        for start in range(0, len(invoices), 500):
            batch = invoices[start : start + 500]
            contacts = contacts_by_customer(session, {i.customer_id for i in batch}, now=now)
            requests = []
            for invoice in batch:
                customer = customers[invoice.customer_id]
                requests.append(
                    EnqueueRequest(
                        tenant_id=tenant_id,
                        kind=kind,
                        recipients=[c.email for c in contacts[invoice.customer_id]],
                        context=invoice_context(
                            tenant=tenant, customer=customer, invoice=invoice, now=now
                        ),
                        document=f"invoice:{invoice.id}",
                        version=invoice.version,
                        customer_id=customer.id,
                        invoice_id=invoice.id,
                    )
                )
            services.sending.queue.enqueue_many(session, requests, now=now)
        return len(invoices)


# --- databases ---------------------------------------------------------------------------------


def postgres_reason() -> str | None:
    """Why the PostgreSQL row cannot run, or None when it can."""
    try:
        engine = sa.create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
    except Exception as exc:  # any failure means "not here"; the reason is reported
        return f"not reachable at {PG_ADMIN_URL}: {type(exc).__name__}"
    return None


@contextmanager
def database(backend: str, workdir: Path) -> Iterator[str]:
    """A fresh, empty database URL: a new SQLite file, or a private PostgreSQL schema."""
    if backend == "sqlite":
        folder = Path(tempfile.mkdtemp(prefix="db-", dir=workdir))
        yield f"sqlite:///{folder / 'bench.db'}"
        return
    schema = f"bench_{secrets.token_hex(4)}"
    admin = sa.create_engine(PG_ADMIN_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def clear_outbox(engine: Engine) -> None:
    """Empty the outbox so a run starts as the first did (the ledger stays)."""
    with session_scope(engine) as session:
        for table in (DeliveryAttempt, MessageRecipient, Message):
            session.execute(sa.delete(table))


def count_sent(engine: Engine) -> int:
    with session_scope(engine) as session:
        query = select(sa.func.count()).where(col(Message.status) == MessageStatus.SENT)
        return int(session.exec(query.select_from(Message)).one())


def count_attempts(engine: Engine) -> int:
    """Delivery attempts recorded: one per message when each was tried exactly once."""
    with session_scope(engine) as session:
        return int(session.exec(select(sa.func.count()).select_from(DeliveryAttempt)).one())


# The tables one enqueue fills, parents first; a copy of each sits beside it under this prefix.
_ENQUEUED = (Message.__tablename__, MessageRecipient.__tablename__)
_SNAPSHOT = "bench_snapshot_"


def snapshot_outbox(engine: Engine) -> None:
    """Copy the freshly enqueued outbox aside, so a second pass can start from the same rows."""
    with engine.begin() as conn:
        for table in _ENQUEUED:
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{_SNAPSHOT}{table}"'))
            conn.execute(sa.text(f'CREATE TABLE "{_SNAPSHOT}{table}" AS SELECT * FROM "{table}"'))


def restore_outbox(engine: Engine) -> None:
    """Put the outbox back as :func:`snapshot_outbox` found it: the same rows, ids and uids,
    all queued and unclaimed, as if the enqueue had just run again (in milliseconds, not
    seconds: the enqueue is timed once per run, before the one-process pass).
    """
    clear_outbox(engine)
    with engine.begin() as conn:
        for table in _ENQUEUED:
            conn.execute(sa.text(f'INSERT INTO "{table}" SELECT * FROM "{_SNAPSHOT}{table}"'))
