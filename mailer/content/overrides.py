"""Tenant template overrides: checked when saved (pure), then stored, read and reset.

An override is a whole template for one part (``subject``, ``text`` or ``html``) of one email
kind, written like the built-in one it replaces (see ``mailer/content/render.py``: an HTML override
extends ``_layout.html`` and fills its ``content`` block). :func:`validate_override` refuses,
with ``line N: reason``, anything that would fail at send time: a syntax error, a name the
kind's context does not have (``KINDS[kind].variables``), a reach for Python internals
(``{{ ''.__class__ }}``), an error when rendered in the sandbox against the kind's sample
context, a subject that is not one line, or a source over :data:`MAX_SOURCE_BYTES`.

An HTML override without a text override also replaces the text part, which is then converted
from the overriding HTML, so the two parts of an email never say different things.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from functools import lru_cache

from jinja2 import meta, nodes
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, delete, select

from mailer.content.compiled import collect_unsafe
from mailer.content.kinds import KINDS
from mailer.content.models import TemplateOverride
from mailer.content.render import PARTS, Renderer, describe_error, error_line
from mailer.content.samples import sample_context
from mailer.content.sandbox import SAVE_BUDGET, metered
from mailer.errors import TemplateError

MAX_SOURCE_BYTES = 64 * 1024
# Jinja's `attr` filter reads an attribute by name, like a dot does.
_ATTRIBUTE_FILTERS = frozenset({"attr"})


@lru_cache(maxsize=1)
def _default_renderer() -> Renderer:
    return Renderer()


def validate_override(
    kind: str, part: str, source: str, *, renderer: Renderer | None = None
) -> None:
    """Accept ``source`` as ``kind``'s ``part`` or raise TemplateError ``line N: reason``."""
    spec = KINDS.get(kind)
    if spec is None:
        raise TemplateError(f"unknown email kind {kind!r}; known kinds: {', '.join(KINDS)}")
    if part not in PARTS:
        raise TemplateError(f"unknown template part {part!r}; parts: {', '.join(PARTS)}")
    size = len(source.encode("utf-8"))
    if size > MAX_SOURCE_BYTES:
        raise TemplateError(f"template is {size:,} bytes; the limit is {MAX_SOURCE_BYTES:,}")
    renderer = renderer or _default_renderer()
    with metered(SAVE_BUDGET):  # analysing it folds constants: ``'x' | center(10**9)``
        _check_source(kind, part, source, renderer)


def _check_source(kind: str, part: str, source: str, renderer: Renderer) -> None:
    spec = KINDS[kind]
    tree = renderer.parse(source)  # syntax errors: "line N: reason"
    _check_attributes(tree)
    allowed = spec.variables | renderer.global_names()
    unknown = meta.find_undeclared_variables(tree) - allowed
    if unknown:
        line, name = min((_first_use(tree, n), n) for n in unknown)
        raise TemplateError(
            f"line {line}: unknown variable {name!r}; {kind} templates may use "
            f"{', '.join(sorted(spec.variables))}"
        )
    context = sample_context(kind, locale="en")
    _check_render(renderer, kind, part, source, context)
    if part == "subject":
        _check_subject(renderer, source, context)


def _walk(node: nodes.Node) -> Iterator[nodes.Node]:
    yield node
    for child in node.iter_child_nodes():
        yield from _walk(child)


def _check_attributes(tree: nodes.Template) -> None:
    """Refuse ``x.__class__``, ``x["_private"]`` and ``x | attr("__globals__")`` outright.

    The sandbox refuses them at render time too; this says so at save time, whatever branch
    of the template they are in.
    """
    found: list[tuple[int, str]] = []
    for node in _walk(tree):
        name: object = None
        if isinstance(node, nodes.Getattr):
            name = node.attr
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            name = node.arg.value
        elif isinstance(node, nodes.Filter) and node.name in _ATTRIBUTE_FILTERS and node.args:
            first = node.args[0]
            name = first.value if isinstance(first, nodes.Const) else None
        if isinstance(name, str) and name.startswith("_"):
            found.append((node.lineno, name))
    if found:
        # Outer nodes come first: on a line, the last found is the first written (__class__).
        line = min(n for n, _ in found)
        name = [a for n, a in found if n == line][-1]
        raise TemplateError(
            f"line {line}: access to {name!r} is not allowed: templates cannot "
            "read private or internal attributes"
        )


def _first_use(tree: nodes.Template, name: str) -> int:
    """The line of the first read of ``name`` where no loop or macro declares it."""
    lines = [
        n.lineno
        for n in _walk_scoped(tree, name)
        if isinstance(n, nodes.Name) and n.name == name and n.ctx == "load"
    ]
    return min(lines, default=1)


def _declares(node: nodes.Node, name: str) -> bool:
    targets: list[nodes.Node] = []
    if isinstance(node, nodes.For):
        targets = [node.target]
    elif isinstance(node, nodes.Macro | nodes.CallBlock):
        targets = list(node.args)
    return any(isinstance(t, nodes.Name) and t.name == name for n in targets for t in _walk(n))


def _walk_scoped(node: nodes.Node, name: str) -> Iterator[nodes.Node]:
    yield node
    if isinstance(node, nodes.For) and _declares(node, name):
        yield from _walk_scoped(node.iter, name)  # the loop's own body and test see the target
        return
    if _declares(node, name):
        return
    for child in node.iter_child_nodes():
        yield from _walk_scoped(child, name)


def _check_render(
    renderer: Renderer, kind: str, part: str, source: str, context: dict[str, object]
) -> None:
    """Render the email with the override once, in the sandbox, against the sample context;
    an HTML override must write only what an email may hold (mailer/content/safe_html.py)."""
    try:
        with collect_unsafe() as unsafe:
            renderer.render(kind, dict(context), overrides={part: source}, budget=SAVE_BUDGET)
    except TemplateError as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, Exception) else None
        line = error_line(cause or exc)
        reason = describe_error(cause) if cause is not None else str(exc)
        if line is None:
            raise TemplateError(f"when rendered with sample data: {reason}") from exc
        raise TemplateError(f"line {line}: {reason}") from exc
    if unsafe:
        more = f" (and {len(unsafe) - 1} more)" if len(unsafe) > 1 else ""
        raise TemplateError(f"when rendered with sample data: {unsafe[0]}{more}")


def _check_subject(renderer: Renderer, source: str, context: dict[str, object]) -> None:
    subject = renderer.render_string(source, dict(context), html=False, budget=SAVE_BUDGET)
    subject = subject.strip()
    if not subject:
        raise TemplateError("line 1: the subject renders empty")
    if "\n" in subject or "\r" in subject:
        written = [i for i, text in enumerate(source.splitlines(), 1) if text.strip()]
        line = written[1] if len(written) > 1 else 1
        raise TemplateError(f"line {line}: a subject must render to one line")


# -- storage -----------------------------------------------------------------------------------


def store_override(
    session: Session,
    *,
    tenant_id: int,
    kind: str,
    part: str,
    source: str,
    updated_by: str,
    now: datetime,
    renderer: Renderer | None = None,
) -> TemplateOverride:
    """Validate, then save ``source`` as the tenant's ``kind``/``part`` (nothing if refused)."""
    validate_override(kind, part, source, renderer=renderer)
    row = session.exec(
        select(TemplateOverride).where(
            TemplateOverride.tenant_id == tenant_id,
            TemplateOverride.kind == kind,
            TemplateOverride.part == part,
        )
    ).first()
    if row is None:
        row = TemplateOverride(
            tenant_id=tenant_id, kind=kind, part=part, source=source, updated_by=updated_by
        )
    row.source = source
    row.updated_at = now
    row.updated_by = updated_by
    session.add(row)
    session.flush()
    return row


def reset_overrides(session: Session, *, tenant_id: int, kind: str, part: str | None = None) -> int:
    """Delete the tenant's overrides of ``kind`` (one ``part`` or all); returns how many."""
    if kind not in KINDS:
        raise TemplateError(f"unknown email kind {kind!r}; known kinds: {', '.join(KINDS)}")
    if part is not None and part not in PARTS:
        raise TemplateError(f"unknown template part {part!r}; parts: {', '.join(PARTS)}")
    statement = delete(TemplateOverride).where(
        col(TemplateOverride.tenant_id) == tenant_id, col(TemplateOverride.kind) == kind
    )
    if part is not None:
        statement = statement.where(col(TemplateOverride.part) == part)
    return int(session.exec(statement).rowcount)


def fetch_overrides(session: Session, *, tenant_id: int, kind: str) -> dict[str, str]:
    """The tenant's overrides of ``kind``: part -> source."""
    rows = session.exec(
        select(TemplateOverride).where(
            TemplateOverride.tenant_id == tenant_id, TemplateOverride.kind == kind
        )
    ).all()
    return {row.part: row.source for row in rows}


def list_overrides(session: Session, *, tenant_id: int) -> list[TemplateOverride]:
    """Every override the tenant has, by kind and part."""
    return list(
        session.exec(
            select(TemplateOverride)
            .where(TemplateOverride.tenant_id == tenant_id)
            .order_by(col(TemplateOverride.kind), col(TemplateOverride.part))
        ).all()
    )


def stored_overrides(engine: Engine) -> Callable[[int, str], Mapping[str, str]]:
    """``overrides(tenant_id, kind)`` read from the database, for
    :class:`~mailer.outbound.assemble.Assembler`."""

    def overrides(tenant_id: int, kind: str) -> Mapping[str, str]:
        with Session(engine) as session:
            return fetch_overrides(session, tenant_id=tenant_id, kind=kind)

    return overrides
