"""Bank statement import: CPU time per line to read, match and record, and to re-import.

    PYTHONPATH=. python -m bench.bank_import [--lines 1000] [--db sqlite postgresql]

A ledger of 500 customers and 2,000 open invoices (bench/_workload.py's document); a
statement of ``--lines`` credits: half quoting an invoice's RF reference (each a different
invoice), a quarter with no reference from a customer's exact name and an invoice's amount,
a quarter from nobody known. Written as camt.053 and as MT940 (tests/bank_files.py), read
alone, then imported once (matched lines become payments with receipts) and a second time
(every line already imported). Process CPU time, not wall clock: the machine is shared.
Figures go to stdout as ``| what | measured | notes |`` rows.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlmodel import Session, select

from bench._workload import TENANT, database, make_config, make_document, postgres_reason
from dunmail.app import build_services
from mailer.clock import FixedClock
from mailer.ledger.bank_statement import parse_statement
from mailer.ledger.models import Invoice
from mailer.ledger.references import format_reference, invoice_reference
from mailer.outbound.memory import MemoryTransport
from tests.bank_files import Entry, camt, mt940


def _entries(invoices: list[tuple[int, str]], tenant_id: int, n: int) -> list[Entry]:
    amount = "1475.40"  # bench/_workload.py's invoice: 12 x 95.00 + 249.00 + 86.40
    out = []
    for i in range(n):
        invoice_id, customer = invoices[i % len(invoices)]
        if i % 4 < 2:
            rf = format_reference(invoice_reference(tenant_id, invoice_id))
            out.append(Entry(amount, ref=rf, debtor=None, iban=None, entry_ref=f"R{i}"))
        elif i % 4 == 2:
            out.append(Entry(amount, debtor=customer, iban=None, entry_ref=f"N{i}"))
        else:
            out.append(Entry("17.00", debtor=f"Stranger {i}", iban=None, entry_ref=f"U{i}"))
    return out


def run(backend: str, lines: int, workdir: Path) -> list[str]:
    rows = []
    with database(backend, workdir) as url:
        clock = FixedClock(datetime.now(UTC))
        services = build_services(make_config(workdir, url, None), clock, MemoryTransport())
        try:
            assert not services.ledger.import_document(
                make_document(2000, 500), tenant=TENANT
            ).errors
            tenant_id = services.tenants.id(TENANT)
            with Session(services.engine) as session:
                found = session.exec(select(Invoice.id, Invoice.customer_id)).all()
            names = {c: f"Customer {c - 1:04d} Trading Ltd" for _, c in found}
            invoices = [(int(i or 0), names[c]) for i, c in found]
            entries = _entries(invoices, tenant_id, lines)
            statement, swift = camt(entries), mt940(entries)
            for label, data in (("camt.053", statement), ("MT940", swift)):
                start = time.process_time()
                parse_statement(data)
                cpu = time.process_time() - start
                per_line = f"{cpu / lines * 1e6:.0f} us CPU/line"
                rows.append(f"| read {label}, {lines} lines | {per_line} | parse only |")
            for label in ("import", "re-import (no-op)"):
                start = time.process_time()
                report = services.bank.import_statement(statement, tenant=TENANT)
                cpu = time.process_time() - start
                rows.append(
                    f"| {label} camt.053 on {backend}, {lines} lines | "
                    f"{cpu / lines * 1e3:.2f} ms CPU/line | {report.summary()} |"
                )
        finally:
            asyncio.run(services.close())
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1000)
    parser.add_argument("--db", nargs="+", default=["sqlite"], choices=["sqlite", "postgresql"])
    args = parser.parse_args()
    print("| what | measured | notes |")
    print("| --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.db:
            if backend == "postgresql" and (why := postgres_reason()):
                print(f"| {backend} | skipped | {why} |")
                continue
            for row in run(backend, args.lines, Path(tmp)):
                print(row)


if __name__ == "__main__":
    main()
