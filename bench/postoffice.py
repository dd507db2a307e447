"""django-post_office beside dunmail: the same reminders queued and sent into the same kind of sink.

    PYTHONPATH=. python -m bench.postoffice [--messages 2000] [--runs 3] [--db sqlite postgresql]

django-post_office (3.12, the ``bench`` extra) is a Python mail queue for Django: ``mail.send``
stores an ``Email`` row, and ``manage.py send_queued_mail`` delivers the queue through a Django
email backend. Here it runs with its default settings, in-process:

* Django is configured with ``settings.configure`` (``INSTALLED_APPS`` post_office and
  contenttypes, ``EMAIL_BACKEND = "post_office.EmailBackend"``, and post_office's own delivery
  backend ``django.core.mail.backends.smtp.EmailBackend`` at the sink), then migrated, in a
  ``spawn``ed process per database: a SQLite file in a temporary folder and, when it answers at
  ``$DUNMAIL_BENCH_POSTGRES``, a private PostgreSQL schema (Django's psycopg 3 backend).
  Set-up, imports and migrations are not timed.
* The messages: the subject, sender, text and HTML parts of one reminder built by dunmail's
  pipeline (``bench.send.build_sample``), one per recipient over the same 1 in 10 recipient
  domains as send.py's raw loop. post_office adds no DKIM signature (Django has none), so each
  message is that much less work than dunmail's.
* Each run empties the queue (untimed), queues ``--messages`` emails with
  ``mail.send_many(..., priority="medium")`` (one ``bulk_create``; timed: the enqueue), then
  runs ``send_queued_mail_until_done`` (timed: the send), which is what ``manage.py
  send_queued_mail`` runs: with the defaults, 1 process, batches of ``BATCH_SIZE`` 100, each
  sent by ``THREADS_PER_PROCESS`` 5 threads over one SMTP connection each (reused within the
  batch), then ``LOG_LEVEL`` 2 (a ``Log`` row per email sent). Every email must end ``sent`` and
  the sink must count every message once. Its INFO log lines (one per batch) are turned down to
  WARNING, to keep the output readable.

The sink is the one send.py uses (``bench/_sink.py``: Postfix's C smtp-sink, else aiosmtpd), in
its own process. Runs of the two databases are interleaved; runs stop once another would pass
``--budget``. Medians go to stdout and ``bench/results/postoffice.json`` (a ``table`` for
bench/run_all.py, which divides dunmail's rates from send.json by these). Arguments this script
does not know are ignored with a note.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import importlib.metadata
import json
import logging
import multiprocessing
import os
import platform
import re
import resource
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench._sink import Address, Sink
from bench._workload import database, postgres_reason
from bench.send import build_sample
from mailer.config import DKIMAlgorithm
from mailer.outbound.dkim import generate_key

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
LABELS = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


@dataclass(frozen=True)
class Content:
    """What every queued email carries: the pipeline-built reminder's parts."""

    sender: str
    subject: str
    text: str
    html: str
    dunmail_bytes: int


def reminder_content(data: bytes) -> Content:
    """Subject, From, text and HTML of one pipeline-built reminder."""
    message = email.message_from_bytes(data, policy=email.policy.default)
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    if text is None or html is None:
        raise SystemExit("the pipeline's reminder has no text or no HTML part")
    return Content(
        sender=str(message["From"]),
        subject=str(message["Subject"]),
        text=text.get_content(),  # type: ignore[attr-defined]
        html=html.get_content(),  # type: ignore[attr-defined]
        dunmail_bytes=len(data),
    )


def recipients(count: int) -> list[str]:
    """send.py's raw loop's recipients: ``count // 10`` domains, in turn."""
    return [f"ap@customer{i % max(1, count // 10):04d}.example" for i in range(count)]


# --- the measuring process (Django is configured once per process) ------------------------------


def django_database(backend: str, url: str | None, workdir: Path) -> dict[str, Any]:
    """Django's DATABASES["default"] for a SQLite file in ``workdir`` or the schema in ``url``."""
    if backend == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": str(workdir / "postoffice.db")}
    parsed = sa.engine.make_url(url or "")
    options = str(parsed.query.get("options", ""))  # "-csearch_path=bench_..."
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parsed.database,
        "USER": parsed.username or "",
        "PASSWORD": parsed.password or "",
        "HOST": parsed.host or "",
        "PORT": str(parsed.port or ""),
        "OPTIONS": {"options": options.replace("-csearch_path", "-c search_path")},
    }


def configure_django(database: dict[str, Any], sink: Address) -> None:
    import django
    from django.conf import settings
    from django.core.management import call_command

    settings.configure(
        DEBUG=False,  # with DEBUG Django keeps every query it ran
        USE_TZ=True,
        TIME_ZONE="UTC",
        INSTALLED_APPS=["django.contrib.contenttypes", "post_office"],
        DATABASES={"default": database},
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        # mail.send runs subject and bodies through Django's template engine even without a
        # template, so a project needs one (this is startproject's).
        TEMPLATES=[
            {"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}
        ],
        EMAIL_BACKEND="post_office.EmailBackend",
        EMAIL_HOST=sink.host,
        EMAIL_PORT=sink.port,
        # post_office's delivery backend; everything else in POST_OFFICE is left at its default.
        POST_OFFICE={"BACKENDS": {"default": "django.core.mail.backends.smtp.EmailBackend"}},
        LOGGING_CONFIG=None,
    )
    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    # post_office logs each batch at INFO to stderr; keep the bench's output readable.
    logging.getLogger("post_office").setLevel(logging.WARNING)


def defaults() -> dict[str, Any]:
    """The post_office settings in force (its defaults), for the result."""
    from post_office import settings as po

    return {
        "processes": 1,
        "threads_per_process": po.get_threads_per_process(),
        "batch_size": po.get_batch_size(),
        "log_level": po.get_log_level(),
        "max_retries": po.get_max_retries(),
        "backend": po.get_backend(),
    }


def message_bytes(content: Content) -> int:
    """Size of one email as Django's SMTP backend sends it."""
    from django.core.mail import EmailMultiAlternatives

    message = EmailMultiAlternatives(
        content.subject, content.text, content.sender, [recipients(1)[0]]
    )
    message.attach_alternative(content.html, "text/html")
    return len(message.message().as_bytes(linesep="\r\n"))


def one_run(content: Content, count: int, lockfile: Path) -> dict[str, Any]:
    from post_office import mail
    from post_office.models import STATUS, Email, Log

    Log.objects.all().delete()
    Email.objects.all().delete()
    batch = [
        {
            "sender": content.sender,
            "recipients": [to],
            "subject": content.subject,
            "message": content.text,
            "html_message": content.html,
            "priority": "medium",
        }
        for to in recipients(count)
    ]
    cpu_before = _cpu()
    started = time.perf_counter()
    mail.send_many(batch)
    queued = time.perf_counter()
    mail.send_queued_mail_until_done(lockfile=str(lockfile))
    done = time.perf_counter()
    cpu = _cpu() - cpu_before
    return {
        "enqueue_seconds": queued - started,
        "send_seconds": done - queued,
        "cpu_seconds": cpu,
        "sent_rows": Email.objects.filter(status=STATUS.sent).count(),
        "failed_rows": Email.objects.exclude(status=STATUS.sent).count(),
    }


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # all of this process's threads
    return usage.ru_utime + usage.ru_stime


def serve(
    conn: Connection, backend: str, url: str | None, workdir: str, sink: Address, content: Content
) -> None:
    """The child: set Django up, say so, then measure one run per count received until None."""
    folder = Path(workdir)
    configure_django(django_database(backend, url, folder), sink)
    conn.send({"settings": defaults(), "message_bytes": message_bytes(content)})
    while (count := conn.recv()) is not None:
        conn.send(one_run(content, count, folder / f"post_office-{backend}"))
    conn.close()


class Measurer:
    """One spawned process holding one configured Django."""

    def __init__(
        self, backend: str, url: str | None, workdir: Path, sink: Address, content: Content
    ):
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=serve,
            args=(child, backend, url, str(workdir), sink, content),
            name=f"postoffice-{backend}",
        )
        self.process.start()
        child.close()
        if not self.conn.poll(120):
            self.close()
            raise SystemExit(f"{backend}: Django did not come up within 120 s")
        self.info: dict[str, Any] = self.conn.recv()

    def run(self, count: int) -> dict[str, Any]:
        self.conn.send(count)
        result: dict[str, Any] = self.conn.recv()
        return result

    def close(self) -> None:
        if self.process.is_alive():
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.process.join(30)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()


# --- report -------------------------------------------------------------------------------------


def summarise(
    args: argparse.Namespace,
    sink: Sink,
    content: Content,
    runs: dict[str, list[dict[str, Any]]],
    infos: dict[str, dict[str, Any]],
    skipped: dict[str, str],
) -> dict[str, Any]:
    n = args.messages
    result: dict[str, Any] = {
        "benchmark": "postoffice",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "post_office": importlib.metadata.version("django-post_office"),
        "django": importlib.metadata.version("django"),
        "sink": sink.name,
        "messages": n,
        "runs_requested": args.runs,
        "dunmail_message_bytes": content.dunmail_bytes,
        "backends": {},
    }
    table: list[dict[str, str]] = []
    version = result["post_office"]
    for backend, done in runs.items():
        info = infos[backend]
        rows = [
            {
                **{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()},
                "send_rate": round(n / r["send_seconds"], 1),
                "end_to_end_rate": round(n / (r["enqueue_seconds"] + r["send_seconds"]), 1),
            }
            for r in done
        ]
        send = statistics.median(r["send_rate"] for r in rows)
        e2e = statistics.median(r["end_to_end_rate"] for r in rows)
        enqueue = statistics.median(r["enqueue_seconds"] for r in rows)
        cpu_ms = statistics.median(r["cpu_seconds"] for r in rows) * 1000 / n
        median_of = f"median of {len(rows)} run{'s' if len(rows) != 1 else ''}"
        if len(rows) < args.runs:
            median_of += f" ({args.runs} asked; --budget cut the rest)"
        s = info["settings"]
        result["backends"][backend] = {
            "send_rate": round(send, 1),
            "end_to_end_rate": round(e2e, 1),
            "enqueue_seconds": round(enqueue, 4),
            "cpu_ms_per_message": round(cpu_ms, 3),
            "message_bytes": info["message_bytes"],
            "settings": s,
            "runs": rows,
        }
        label = LABELS[backend]
        table += [
            {
                "what": f"django-post_office {version}, {label}: send_queued_mail",
                "measured": f"{send:,.0f} msg/s",
                "target": "-",
                "notes": f"{n:,} queued reminders (same subject, text and HTML, "
                f"{info['message_bytes'] / 1024:.1f} KB, no DKIM; dunmail's signed "
                f"{content.dunmail_bytes / 1024:.1f} KB) sent by its defaults: "
                f"{s['processes']} process x {s['threads_per_process']} threads, batches of "
                f"{s['batch_size']}, LOG_LEVEL {s['log_level']}, Django's SMTP backend into "
                f"{sink.name}; {cpu_ms:.1f} ms CPU/msg; {median_of}",
            },
            {
                "what": f"django-post_office {version}, {label}: end to end",
                "measured": f"{e2e:,.0f} msg/s",
                "target": "-",
                "notes": f"mail.send_many of {n:,} (one bulk_create, {enqueue:.2f} s), "
                "then send_queued_mail",
            },
        ]
    for backend, reason in skipped.items():
        result["backends"][backend] = {"skipped": reason}
        table.append(
            {
                "what": f"django-post_office {version}, {LABELS[backend]}",
                "measured": "not run",
                "target": "-",
                "notes": reason,
            }
        )
    result["table"] = table
    return result


# --- main ---------------------------------------------------------------------------------------


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    generate_key(workdir / "dkim-s1.pem", DKIMAlgorithm.RSA_SHA256)
    content = reminder_content(asyncio.run(build_sample(workdir)).data)
    backends = list(dict.fromkeys(args.db))
    skipped: dict[str, str] = {}
    if "postgresql" in backends and (reason := postgres_reason()) is not None:
        backends.remove("postgresql")
        skipped["postgresql"] = reason
        print(f"PostgreSQL row skipped: {reason}", flush=True)
    n = args.messages
    with ExitStack() as stack:
        sink = Sink.start(args.sink, workdir)
        stack.callback(sink.stop)
        print(f"sink: {sink.name} on {sink.host}:{sink.port}", flush=True)
        measurers: dict[str, Measurer] = {}
        for backend in backends:
            url = stack.enter_context(database(backend, workdir)) if backend != "sqlite" else None
            folder = Path(tempfile.mkdtemp(prefix=f"{backend}-", dir=workdir))
            measurer = Measurer(backend, url, folder, sink.address, content)
            stack.callback(measurer.close)
            measurers[backend] = measurer
            print(f"{backend}: Django ready; post_office settings {measurer.info['settings']}")
        runs: dict[str, list[dict[str, Any]]] = {b: [] for b in backends}
        started = time.monotonic()
        for i in range(args.runs):
            line = f"run {i + 1}:"
            for backend, measurer in measurers.items():
                before = sink.received()
                result = measurer.run(n)
                took = sink.wait_for(before + n) - before
                if result["sent_rows"] != n or took != n:
                    raise SystemExit(
                        f"{backend}: {result['sent_rows']} of {n} emails sent "
                        f"({result['failed_rows']} not); the sink took {took}"
                    )
                runs[backend].append(result)
                line += (
                    f" {backend} queue {result['enqueue_seconds']:.2f} s, send "
                    f"{n / result['send_seconds']:,.0f} msg/s;"
                )
            elapsed = time.monotonic() - started
            print(f"{line} [{elapsed:.0f} s so far]", flush=True)
            if i + 1 < args.runs and elapsed * (i + 2) / (i + 1) > args.budget:
                print(f"stopping after {i + 1} of {args.runs} runs: --budget {args.budget:.0f} s")
                break
        infos = {b: m.info for b, m in measurers.items()}
        return summarise(args, sink, content, runs, infos, skipped)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000, help="emails per measurement")
    parser.add_argument("--runs", type=int, default=3, help="measurements; medians are reported")
    parser.add_argument(
        "--budget", type=float, default=120.0, help="seconds of measuring before runs stop early"
    )
    parser.add_argument("--sink", choices=("auto", "smtp-sink", "aiosmtpd"), default="auto")
    parser.add_argument(
        "--db", nargs="+", choices=("sqlite", "postgresql"), default=["sqlite", "postgresql"]
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "postoffice.json")
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        print(f"postoffice.py: ignoring {' '.join(unknown)}")
    if args.messages < 1 or args.runs < 1:
        raise SystemExit("--messages and --runs must be at least 1")
    # As in send.py: the sample is built from a dunmail Config, which reads DUNMAIL_* overrides.
    for name in [n for n in os.environ if re.match(r"DUNMAIL_(?!BENCH_)", n, re.IGNORECASE)]:
        del os.environ[name]
    with tempfile.TemporaryDirectory(prefix="dunmail-bench-") as tmp:
        result = run(args, Path(tmp))
    print()
    for row in result["table"]:
        print("| " + " | ".join(row.values()) + " |")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
