"""Bank transfer block: CPU time to build one (EPC payload, QR code as PNG and as SVG path), and
what it adds to an email's stored context and HTML.

    PYTHONPATH=. python -m bench.bank_transfer [--count 500]

Each invoice email of a tenant with ``[bank]`` builds the block once, when it is queued
(mailer/content/bank_transfer.py), so this is the cost added per queued invoice email. Names and
references vary per call so no cache helps; a short Latin name and a 70-character Greek one.
Process CPU time, not wall clock: the machine is shared. Figures go to stdout as
``| what | measured | notes |`` rows.
"""

from __future__ import annotations

import argparse
import json
import time

from mailer.bank_config import BankConfig
from mailer.content.bank_transfer import bank_transfer
from mailer.content.render import Renderer
from mailer.content.samples import sample_context
from mailer.ledger.references import invoice_reference

BANK = BankConfig(iban="DE89 3704 0044 0532 0130 00", bic="COBADEFFXXX")
NAMES = {"short Latin name": "Acme Supplies GmbH", "70-char Greek name": "Ωμέγα Εφοδιαστική " * 4}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    args = parser.parse_args()
    print("| what | measured | notes |")
    print("|---|---|---|")
    for label, name in NAMES.items():
        start = time.process_time()
        for i in range(args.count):
            bank_transfer(
                BANK.model_copy(update={"account_name": name[:70]}),
                tenant_name="Acme",
                reference=invoice_reference(7, 1000 + i),
                amount_minor=100 + i * 997,
                currency="EUR",
            )
        per = (time.process_time() - start) / args.count * 1000
        print(f"| build one block, {label} | {per:.2f} ms CPU | payload, PNG + SVG path |")
    block = bank_transfer(
        BANK, tenant_name="Acme", reference=invoice_reference(7, 123456),
        amount_minor=1_234_550, currency="EUR",
    )  # fmt: skip
    stored = len(json.dumps(block).encode())
    png = len(block["qr"] or "")
    print(f"| context added per email | {stored:,} bytes of JSON | QR PNG {png:,} chars |")
    renderer = Renderer()
    plain = sample_context("new_invoice", locale="en")
    with_block = {**plain, "bank_transfer": block}
    html_plain = renderer.render("new_invoice", plain).html or ""
    html_block = renderer.render("new_invoice", with_block).html or ""
    print(
        f"| HTML part added | {len(html_block) - len(html_plain):,} bytes "
        f"| of {len(html_block):,} with the block |"
    )


if __name__ == "__main__":
    main()
