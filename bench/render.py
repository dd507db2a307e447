"""PDF rendering: one invoice's time; PDFs per second through PDFRenderer beside plain WeasyPrint.

    PYTHONPATH=. python bench/render.py [--count 200] [--single 25] [--long 500] [--levers]

In one run, on the 8-line sample invoice (``mailer.content.pdf_samples.sample_pdf_context``):

* single: ``render_document`` in this process, warm, ``--single`` times: median and best.
* engine: ``PDFRenderer(workers=2)`` (started and warmed before timing) renders ``--count``
  invoices, each with its own number so no render is served from the cache, all submitted at
  once from the event loop: PDFs per second.
* plain: the same template's HTML, self-contained (``render_standalone_html``: our CSS inlined,
  the system's DejaVu Sans, WeasyPrint's default options), written by ``HTML(string).write_pdf()``
  in 2 spawned processes (``multiprocessing.Pool``, one warm-up render each) with no dunmail code
  in the loop: what WeasyPrint alone does with this template on this machine.
* plain, same fonts: as plain, but given the engine's fonts (Dunmail Sans by ``file://`` URL) and
  its ``full_fonts`` choice, so the two differ only by dunmail's own work (templates, fetcher,
  pool, pickling): the engine's overhead.
* emails: the whole engine sends ``--count`` new_invoice emails, each with its own invoice PDF
  (PDFRenderer pool of 2, SQLite ledger, in-memory transport): invoice emails per second.

The issue's targets: the engine's invoice-email rate reaches at least 90 % of plain's rate, and
one invoice takes at most 60 ms. ``--long N`` also times one N-line invoice (0 to skip).
``--levers`` measures, in this process, what each speed lever of mailer/pdf*.py is worth
(CPU time, best of ``--single``). Results go to stdout and ``bench/results/render.json`` (a
``table`` for bench/run_all.py). Arguments this script does not know (``run_all.py -- ...``
passes its extras to every benchmark) are ignored with a note.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench._workload import TENANT, enqueue_invoice_emails, make_config, make_document
from dunmail.app import build_services
from mailer.clock import SystemClock
from mailer.content import pdf, pdf_pool
from mailer.content.pdf_samples import sample_pdf_context
from mailer.outbound.memory import MemoryTransport

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
WORKERS = 2
TARGET_RATIO = 0.90  # the engine's PDFs/s as a share of plain WeasyPrint's, both 2 processes
TARGET_SINGLE_MS = 60.0  # one one-page invoice, in process


def invoices(count: int, lines: int = 8) -> list[dict[str, Any]]:
    """``count`` sample invoice contexts, each with its own number (distinct render keys)."""
    out = []
    for i in range(count):
        context = sample_pdf_context("invoice", lines=lines)
        context["invoice"]["number"] = f"INV-2026-{i:05d}"
        out.append(context)
    return out


# --- plain WeasyPrint, in its own processes -----------------------------------------------------

_PLAIN_OPTIONS: dict[str, Any] = {}


def _plain_init(options: dict[str, Any], warm_html: str) -> None:
    from weasyprint import HTML

    _PLAIN_OPTIONS.update(options)
    HTML(string=warm_html).write_pdf(**options)


def _plain_render(html: str) -> int:
    from weasyprint import HTML

    return len(HTML(string=html).write_pdf(**_PLAIN_OPTIONS))


def plain_rate(htmls: list[str], options: dict[str, Any]) -> tuple[float, float]:
    """(PDFs per second, seconds) for plain WeasyPrint in WORKERS spawned processes."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(WORKERS, initializer=_plain_init, initargs=(options, htmls[0])) as pool:
        pool.map(_plain_render, htmls[:WORKERS], chunksize=1)  # every worker has started
        started = time.perf_counter()
        sizes = pool.map(_plain_render, htmls, chunksize=1)
        seconds = time.perf_counter() - started
    if not all(sizes):
        raise SystemExit("plain WeasyPrint produced an empty PDF")
    return len(htmls) / seconds, seconds


# --- the engine ---------------------------------------------------------------------------------


async def engine_rate(contexts: list[dict[str, Any]]) -> tuple[float, float]:
    """(PDFs per second, seconds) through PDFRenderer with WORKERS processes."""
    renderer = pdf_pool.PDFRenderer(workers=WORKERS)
    try:
        await renderer.start()
        started = time.perf_counter()
        results = await asyncio.gather(*(renderer.render("invoice", c) for c in contexts))
        seconds = time.perf_counter() - started
    finally:
        await renderer.close()
    if len({r.sha256 for r in results}) != len(contexts):
        raise SystemExit("the engine returned the same PDF for different invoices")
    return len(contexts) / seconds, seconds


async def email_rate(count: int, workdir: Path) -> tuple[float, float]:
    """(invoice emails per second, seconds) through the whole engine, PDF attached.

    ``count`` new_invoice emails, each for its own invoice (so each renders its own PDF), in a
    SQLite ledger: claim, render the email, render and store the PDF in a PDFRenderer pool of
    WORKERS processes, compose, DKIM-sign, hand to a MemoryTransport, record. The transport is
    in memory so the figure is the engine's, not an SMTP server's (bench/send.py measures SMTP).
    """
    url = f"sqlite:///{workdir / 'emails.db'}"
    renderer = pdf_pool.PDFRenderer(workers=WORKERS)
    transport = MemoryTransport()
    config = make_config(workdir, url, None, pdfs=True)
    services = build_services(config, SystemClock(), transport, pdf_renderer=renderer)
    try:
        report = services.ledger.import_document(
            make_document(count, max(1, count // 10)), tenant=TENANT
        )
        if report.errors:
            raise SystemExit(f"the import refused records: {report.errors[:3]}")
        enqueue_invoice_emails(services, "new_invoice")
        await renderer.start()
        started = time.perf_counter()
        result = await services.sending.deliver()
        seconds = time.perf_counter() - started
    finally:
        await services.close()
    if result.sent != count or len(transport.sent) != count:
        raise SystemExit(f"emails: {result.sent} of {count} sent ({result})")
    if not all(b"application/pdf" in m.data for m in transport.sent):
        raise SystemExit("an invoice email went out without its PDF")
    return count / seconds, seconds


def timed(fn: Callable[[], object], runs: int, clock: Callable[[], float]) -> list[float]:
    fn()  # warm
    out = []
    for _ in range(runs):
        started = clock()
        fn()
        out.append(clock() - started)
    return out


def levers(runs: int, workdir: Path) -> list[dict[str, Any]]:
    """CPU ms (best of ``runs``) per lever, each step adding one to the one before."""
    from weasyprint import HTML
    from weasyprint.text.fonts import FontConfiguration

    context = invoices(1)[0]
    system = pdf.render_standalone_html("invoice", context)
    dunmail = pdf.render_standalone_html("invoice", context, fonts_dir=workdir)
    shared = FontConfiguration()
    logo = _logo()
    with_logo = {**context, "tenant": {**context["tenant"], "logo_url": "asset:logo.png"}}
    (workdir / "logo.png").write_bytes(logo)
    file_logo = {
        **context,
        "tenant": {**context["tenant"], "logo_url": (workdir / "logo.png").as_uri()},
    }
    logo_html = pdf.render_standalone_html("invoice", file_logo, fonts_dir=workdir)
    steps: list[tuple[str, Callable[[], object]]] = [
        (
            "naive: system DejaVu Sans, new FontConfiguration, CSS parsed per render",
            lambda: HTML(string=system).write_pdf(),
        ),
        (
            "+ one FontConfiguration per process",
            lambda: HTML(string=system).write_pdf(font_config=shared),
        ),
        (
            "+ Dunmail Sans (Latin subset, no GSUB/GPOS), still subset per render",
            lambda: HTML(string=dunmail).write_pdf(font_config=shared),
        ),
        (
            "+ full_fonts (embed the 25 KB fonts whole: no fontTools at all)",
            lambda: HTML(string=dunmail).write_pdf(font_config=shared, full_fonts=True),
        ),
        (
            "engine: + stylesheet parsed once, templates, fetcher (render_document)",
            lambda: pdf.render_document("invoice", context),
        ),
        (
            "variant: full_fonts + uncompressed_pdf",
            lambda: HTML(string=dunmail).write_pdf(
                font_config=shared, full_fonts=True, uncompressed_pdf=True
            ),
        ),
        (
            "variant: engine with a 300x100 PNG logo",
            lambda: pdf.render_document("invoice", with_logo, assets={"asset:logo.png": logo}),
        ),
        (
            "variant: full_fonts, PNG logo",
            lambda: HTML(string=logo_html).write_pdf(font_config=shared, full_fonts=True),
        ),
        (
            "variant: full_fonts, PNG logo, optimize_images",
            lambda: HTML(string=logo_html).write_pdf(
                font_config=shared, full_fonts=True, optimize_images=True
            ),
        ),
    ]
    rows = []
    for what, fn in steps:
        cpu = timed(fn, runs, time.process_time)
        output = fn()
        size = len(output.data if isinstance(output, pdf.RenderedPDF) else output)  # type: ignore[arg-type]
        rows.append(
            {
                "what": what,
                "cpu_ms_best": round(min(cpu) * 1000, 1),
                "cpu_ms_median": round(statistics.median(cpu) * 1000, 1),
                "bytes": size,
            }
        )
        print(f"  {min(cpu) * 1000:7.1f} ms  {what}", flush=True)
    return rows


def _logo() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (300, 100), (11, 110, 79)).save(out, format="PNG")
    return out.getvalue()


# --- report -------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def build_table(r: dict[str, Any]) -> list[dict[str, str]]:
    """The README rows (what, measured, target, notes) from the result figures."""
    single, engine, plain = r["single_ms"], r["engine"]["rate"], r["plain"]["rate"]
    same = r["plain_same_fonts"]["rate"]
    rows = [
        {
            "what": "one-page invoice PDF, in process",
            "measured": f"{single['median']:.0f} ms",
            "target": f"<= {TARGET_SINGLE_MS:.0f} ms ({verdict(r['single_met'])})",
            "notes": f"8 lines; warm process; median of {len(single['runs'])} "
            f"(best {min(single['runs']):.0f} ms)",
        },
        {
            "what": f"plain WeasyPrint, {WORKERS} processes",
            "measured": f"{plain:.1f} PDFs/s",
            "target": "-",
            "notes": "same template as one HTML page, system DejaVu Sans, default options",
        },
        {
            "what": f"plain WeasyPrint with the engine's fonts, {WORKERS} processes",
            "measured": f"{same:.1f} PDFs/s",
            "target": "-",
            "notes": "plus Dunmail Sans and the engine's full_fonts choice: WeasyPrint's share",
        },
        {
            "what": f"PDFRenderer, {WORKERS} workers",
            "measured": f"{engine:.1f} PDFs/s ({r['ratio']:.0%} of plain)",
            "target": "-",
            "notes": f"{r['count']} distinct invoices submitted at once; warm workers; "
            f"{engine / same:.0%} of same-font plain",
        },
        {
            "what": f"engine invoice emails with their PDF, {WORKERS} PDF workers",
            "measured": f"{r['emails']['rate']:.1f} emails/s ({r['email_ratio']:.0%} of plain)",
            "target": f">= {TARGET_RATIO:.0%} of plain ({verdict(r['email_ratio_met'])})",
            "notes": f"{r['count']} new_invoice emails, one invoice each: claim, render, PDF, "
            "store, compose, DKIM, record (in-memory transport); SQLite",
        },
    ]
    if r["long"]:
        rows.append(
            {
                "what": f"{r['long']['lines']}-line invoice PDF, in process",
                "measured": f"{r['long']['seconds']:.2f} s",
                "target": "-",
                "notes": f"{r['long']['pages']} pages, one render",
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200, help="invoices per throughput run")
    parser.add_argument("--single", type=int, default=25, help="in-process renders to time")
    parser.add_argument("--long", type=int, default=500, help="lines of the long invoice; 0 skips")
    parser.add_argument("--levers", action="store_true", help="also measure each speed lever")
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        print(f"render.py: ignoring {' '.join(unknown)}")
    if args.count < WORKERS or args.single < 1:
        raise SystemExit(f"--count must be at least {WORKERS} and --single at least 1")

    contexts = invoices(args.count)
    print(f"render: {args.count} one-page invoices, {WORKERS} processes, {os.cpu_count()} CPUs")
    pdf.warm()
    first = contexts[0]
    wall = timed(lambda: pdf.render_document("invoice", first), args.single, time.perf_counter)
    single_ms = statistics.median(wall) * 1000
    print(f"  single: median {single_ms:.1f} ms, best {min(wall) * 1000:.1f} ms")

    rate, seconds = asyncio.run(engine_rate(contexts))
    print(f"  engine: {rate:.1f} PDFs/s ({seconds:.2f} s)")
    with tempfile.TemporaryDirectory(prefix="dunmail-bench-") as tmp:
        htmls = [pdf.render_standalone_html("invoice", c) for c in contexts]
        plain, plain_seconds = plain_rate(htmls, {})
        print(f"  plain WeasyPrint: {plain:.1f} PDFs/s ({plain_seconds:.2f} s)")
        htmls = [pdf.render_standalone_html("invoice", c, fonts_dir=Path(tmp)) for c in contexts]
        same, same_seconds = plain_rate(htmls, {"full_fonts": not pdf.harfbuzz_subset_available()})
        print(f"  plain WeasyPrint, same fonts: {same:.1f} PDFs/s ({same_seconds:.2f} s)")
        lever_rows = levers(args.single, Path(tmp)) if args.levers else []
        emails, email_seconds = asyncio.run(email_rate(args.count, Path(tmp)))
        print(f"  engine invoice emails with PDF: {emails:.1f}/s ({email_seconds:.2f} s)")

    long = None
    if args.long:
        started = time.perf_counter()
        rendered = pdf.render_document("invoice", sample_pdf_context("invoice", lines=args.long))
        long_seconds = time.perf_counter() - started
        long = {"lines": args.long, "seconds": round(long_seconds, 3), "pages": rendered.pages}
        print(f"  {args.long}-line invoice: {long_seconds:.2f} s, {rendered.pages} pages")

    result: dict[str, Any] = {
        "benchmark": "render",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "weasyprint": importlib.metadata.version("weasyprint"),
        "harfbuzz_subset": pdf.harfbuzz_subset_available(),
        "count": args.count,
        "workers": WORKERS,
        "single_ms": {"median": round(single_ms, 1), "runs": [round(s * 1000, 1) for s in wall]},
        "engine": {"rate": round(rate, 1), "seconds": round(seconds, 3)},
        "plain": {"rate": round(plain, 1), "seconds": round(plain_seconds, 3)},
        "plain_same_fonts": {"rate": round(same, 1), "seconds": round(same_seconds, 3)},
        "emails": {"rate": round(emails, 1), "seconds": round(email_seconds, 3)},
        "ratio": round(rate / plain, 3),
        "email_ratio": round(emails / plain, 3),
        "target_ratio": TARGET_RATIO,
        "target_single_ms": TARGET_SINGLE_MS,
        "ratio_met": rate / plain >= TARGET_RATIO,
        "single_met": single_ms <= TARGET_SINGLE_MS,
        "long": long,
        "levers": lever_rows,
    }
    result["email_ratio_met"] = emails / plain >= TARGET_RATIO
    result["target_met"] = result["email_ratio_met"] and result["single_met"]
    result["table"] = build_table(result)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "render.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print()
    for row in result["table"]:
        print("| " + " | ".join(row.values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
