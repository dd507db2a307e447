"""``dunmail inbox``: the AR inbox's threads and a clerk's actions on them."""

from __future__ import annotations

import getpass
from enum import StrEnum
from typing import Annotated, Any

import typer

from dunmail.app import Services
from dunmail.cli_common import (
    AtOpt,
    ConfigOpt,
    JsonOpt,
    TenantOpt,
    app,
    one_line,
    plain,
    print_json,
    with_services,
)
from dunmail.labels import Labels, labels_for
from mailer.inbox_models import ThreadStatus

inbox_app = typer.Typer(
    help="The AR inbox: a thread per customer document with its emails, bounces and replies."
)
app.add_typer(inbox_app, name="inbox")


class StatusFilter(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"
    ALL = "all"


class OnlyFilter(StrEnum):
    """bounce.inbox.THREAD_FILTERS, as the CLI's choices."""

    BOUNCED = "bounced"
    REPLIED = "replied"
    FIX_CONTACT = "fix_contact"
    REVIEW = "review"


ThreadArg = Annotated[int, typer.Argument(help="the thread's id (dunmail inbox)")]


@inbox_app.callback(invoke_without_command=True)
def inbox(
    ctx: typer.Context,
    status: Annotated[StatusFilter, typer.Option("--status", help="open, resolved or all")] = (
        StatusFilter.OPEN
    ),
    only: Annotated[
        OnlyFilter | None, typer.Option("--only", help="only threads that bounced, ...")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="at most N threads")] = None,
    tenant: TenantOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One line per thread: id, customer, document, status, assignee, last event, time."""
    if ctx.invoked_subcommand is not None:
        return
    wanted = None if status is StatusFilter.ALL else ThreadStatus(status.value)

    async def body(services: Services) -> tuple[list[dict[str, Any]], Labels]:
        rows = services.inbox.threads(
            tenant=tenant, status=wanted, only=only.value if only else None, limit=limit
        )
        return rows, labels_for(services.customers.language(tenant=tenant))

    rows, words = with_services(config, None, body)
    if as_json:
        print_json(rows)
        return
    if not rows:
        plain(f"no {status.value} threads" if wanted else "no threads")
    for r in rows:
        last = (words.entry(r["last"]) if r.get("last") else None) or r["last_event"]
        plain(
            f"{r['id']}  {one_line(r['customer'] or '-')}  {one_line(r['document'])}  "
            f"{words.thread_status(r['status'])}{_needs_review(r)}  "
            f"{one_line(r['assignee'] or '-')}  {one_line(last)}  {r['last_event_at'][:19]}"
        )


def _needs_review(thread: dict[str, Any]) -> str:
    """The "(N bounce reviews open)" mark while hard verdicts on weak evidence wait."""
    count = int(thread.get("reviews") or 0)
    return f" ({count} bounce review{'s' if count > 1 else ''} open)" if count else ""


def _print_thread(thread: dict[str, Any], words: Labels | None = None) -> None:
    """The thread and its timeline in the clerk's words (dunmail/labels.py; English unless
    ``words`` say otherwise), each entry's detail under it as the mail system gave it."""
    words = words or labels_for(None)
    plain(
        f"thread {thread['id']}: {one_line(thread['document'])} of "
        f"{one_line(thread['customer'] or '-')} ({one_line(thread['customer_name'] or '-')}), "
        f"{words.thread_status(thread['status'])}{_needs_review(thread)}, assigned to "
        f"{one_line(thread['assignee'] or 'nobody')}"
    )
    for entry in thread["timeline"]:
        said = words.entry(entry) or entry["summary"]
        plain(f"{entry['at'][:19]}  {words.event(entry['type']):<16}  {one_line(said)}")
        if entry["detail"] and entry["type"] != "note":
            plain(f"{'':39}{entry['detail']}")
    for p in thread.get("proposals", []):
        if p["status"] != "none":
            plain(
                f"proposal {p['id']} ({p['status']}): {p['intent'].replace('_', ' ')}: "
                f"{one_line(p['action'])}; the customer wrote: {one_line(p['evidence'])}"
            )


@inbox_app.command("show")
def inbox_show(
    thread: ThreadArg, tenant: TenantOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False
) -> None:
    """A thread's timeline: emails sent, attempt results, bounces, replies and notes."""

    async def body(services: Services) -> tuple[dict[str, Any], Labels]:
        found = services.inbox.thread(thread, tenant=tenant)
        return found, labels_for(services.customers.language(tenant=tenant))

    found, words = with_services(config, None, body)
    if as_json:
        print_json(found)
        return
    _print_thread(found, words)


@inbox_app.command("unmatched")
def inbox_unmatched(
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="only mail that arrived at its addresses")
    ] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Inbound mail that matched no email sent (forged, or not about our mail)."""

    async def body(services: Services) -> list[dict[str, Any]]:
        return services.inbox.unmatched(tenant=tenant)

    rows = with_services(config, None, body)
    if as_json:
        print_json(rows)
        return
    if not rows:
        plain("no unmatched mail")
    for r in rows:
        plain(
            f"{r['id']}  {r['received_at'][:19]}  {r['kind'] or '-'}  "
            f"from {one_line(r['from'] or '-')}  {one_line(r['subject'])}  "
            f"({one_line(r['why'] or '')}; {one_line(r['source'])})"
        )


@inbox_app.command("note")
def inbox_note(
    thread: ThreadArg,
    text: Annotated[str, typer.Argument(help="the note")],
    author: Annotated[str | None, typer.Option("--author", help="default: cli:<user>")] = None,
    tenant: TenantOpt = None,
    config: ConfigOpt = None,
    at: AtOpt = None,
) -> None:
    """Leave a note on a thread."""

    async def body(services: Services) -> dict[str, Any]:
        by = author or f"cli:{getpass.getuser()}"
        return services.inbox.note(thread, text, tenant=tenant, author=by)

    with_services(config, at, body)
    plain(f"thread {thread}: note added")


@inbox_app.command("resolve")
def inbox_resolve(
    thread: ThreadArg, tenant: TenantOpt = None, config: ConfigOpt = None, at: AtOpt = None
) -> None:
    """Mark a thread resolved; the next bounce or reply reopens it."""

    async def body(services: Services) -> dict[str, Any]:
        return services.inbox.update(thread, tenant=tenant, status=ThreadStatus.RESOLVED)

    with_services(config, at, body)
    plain(f"thread {thread}: resolved")


@inbox_app.command("assign")
def inbox_assign(
    thread: ThreadArg,
    user: Annotated[str, typer.Argument(help="who handles it")],
    tenant: TenantOpt = None,
    config: ConfigOpt = None,
    at: AtOpt = None,
) -> None:
    """Give a thread to someone."""

    async def body(services: Services) -> dict[str, Any]:
        return services.inbox.update(thread, tenant=tenant, assignee=user)

    with_services(config, at, body)
    plain(f"thread {thread}: assigned to {user}")


@inbox_app.command("resend")
def inbox_resend(
    thread: ThreadArg,
    by: Annotated[str | None, typer.Option("--by", help="default: cli:<user>")] = None,
    tenant: TenantOpt = None,
    config: ConfigOpt = None,
    at: AtOpt = None,
) -> None:
    """After fixing the contact: send the thread's bounced email again and resume chasing."""

    async def body(services: Services) -> tuple[Any, list[str], Labels]:
        message, addresses = await services.inbox.resend(
            thread, tenant=tenant, by=by or f"cli:{getpass.getuser()}"
        )
        return message, addresses, labels_for(services.customers.language(tenant=tenant))

    message, addresses, words = with_services(config, at, body)
    plain(
        f"thread {thread}: {words.kind(message.kind)} resent to {', '.join(addresses)} "
        f"({words.message_state(message.status.value)})"
    )


@inbox_app.command("suppress")
def inbox_suppress(
    thread: ThreadArg,
    address: Annotated[
        str, typer.Argument(help="an address the thread's unverified bounce or open review names")
    ],
    by: Annotated[str | None, typer.Option("--by", help="default: cli:<user>")] = None,
    tenant: TenantOpt = None,
    config: ConfigOpt = None,
    at: AtOpt = None,
) -> None:
    """Block the address an unverified bounce or an open bounce review on the thread names."""

    async def body(services: Services) -> bool:
        return services.inbox.suppress_unverified(
            thread, address, tenant=tenant, by=by or f"cli:{getpass.getuser()}"
        )

    new = with_services(config, at, body)
    plain(f"thread {thread}: {address} {'suppressed' if new else 'was already suppressed'}")


@inbox_app.command("dismiss")
def inbox_dismiss(
    thread: ThreadArg,
    address: Annotated[str, typer.Argument(help="an address the thread's open review names")],
    by: Annotated[str | None, typer.Option("--by", help="default: cli:<user>")] = None,
    tenant: TenantOpt = None,
    config: ConfigOpt = None,
    at: AtOpt = None,
) -> None:
    """Dismiss the open bounce review of an address: its hard verdict was wrong, keep mailing."""

    async def body(services: Services) -> int:
        return services.inbox.dismiss_review(
            thread, address, tenant=tenant, by=by or f"cli:{getpass.getuser()}"
        )

    with_services(config, at, body)
    plain(f"thread {thread}: review of {address} dismissed")


@inbox_app.command("accept")
def inbox_accept(
    thread: ThreadArg,
    proposal: Annotated[
        int | None, typer.Option("--proposal", help="default: the newest one waiting")
    ] = None,
    by: Annotated[str | None, typer.Option("--by", help="default: cli:<user>")] = None,
    tenant: TenantOpt = None,
    config: ConfigOpt = None,
    at: AtOpt = None,
) -> None:
    """Do what a customer's reply proposes: hold, task or contact change (dunmail inbox show)."""

    async def body(services: Services) -> str:
        return services.inbox.accept(
            thread, tenant=tenant, by=by or f"cli:{getpass.getuser()}", proposal=proposal
        )

    done = with_services(config, at, body)
    plain(f"thread {thread}: {one_line(done)}")
