"""PURE: render once, fill per message: an email's HTML is inlined once per shape, then filled.

Inlining CSS (``css_inline``) parses the whole document and matches every rule against it, per
message. But two reminders of one tenant, kind and language differ only in the *values* they
show (names, numbers, amounts, dates, links), not in their markup. So the HTML sandbox compiles
each ``{{ expression }}`` that writes a value into text or into a link/image attribute through a
slot filter (:class:`SlotValues`, at compile time): while a render collects slots
(:func:`collecting`), the filter records the escaped value and writes a placeholder instead.
The rendered *skeleton* is inlined once (:class:`InlinedShapes`) and cached; every later
message with the same skeleton is the cached result with its values written into it, with the
same escaping the inliner's serialiser gives (:func:`serialise`): css-inline does not run.

What stays literal in the skeleton, because CSS can match on it: class, id, style, lang and
dir attributes (``class="label{{ ' strong' if strong }}"``), everything inside ``<style>``
(the tenant's brand colour and CSS), markup produced by a variable (a value whose escaped
form contains ``<``: a ``{% set %}`` block's ``<strong>``, an HTML fragment), empty values
(``:empty``), and link and image attributes when the tenant's CSS has attribute selectors or
inside a tenant's HTML override (its links are checked by ``safe_html`` as written). Each of
those gives its own skeleton, inlined once. A value carrying the placeholder's own characters
makes the render fall back to inlining that message (:meth:`InlinedShapes.inline`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from html import unescape
from typing import Any

from jinja2 import nodes, pass_context
from jinja2.visitor import NodeTransformer
from markupsafe import Markup, escape

OPEN, CLOSE = "\ue000", "\ue001"  # private-use characters around a slot's number
_PLACEHOLDER = re.compile(f"{OPEN}([0-9]+){CLOSE}")
# Attributes no selector in our stylesheet matches on, whose values may be slots.
_SLOTTED_ATTRIBUTES = frozenset({"href", "src", "alt", "title"})
_ATTRIBUTE = re.compile(r"([\w:-]+)\s*=\s*[\"']?[^\"'=<>]*$")


# A slot's value: its text (unescaped), whether it is in an attribute, and what the render
# wrote for a Markup value (None for a plain string, which the render escapes).
Value = tuple[str, bool, str | None]


class _Render:
    """One render's slots: the escaped values, in order, and whether each is an attribute's."""

    def __init__(self, attributes: bool) -> None:
        self.attributes = attributes  # may link and image attributes be slots?
        self.values: list[Value] = []


_SLOTS: ContextVar[_Render | None] = ContextVar("dunmail_slots", default=None)


@contextmanager
def collecting(*, attributes: bool) -> Iterator[list[Value]]:
    """Collect the slots of the render inside: yields the list of :data:`Value` that the
    skeleton's placeholders stand for."""
    state = _Render(attributes)
    token = _SLOTS.set(state)
    try:
        yield state.values
    finally:
        _SLOTS.reset(token)


@contextmanager
def literal_attributes() -> Iterator[None]:
    """Inside, link and image attributes are written as they are (a tenant's HTML block, whose
    links ``safe_html`` checks)."""
    state = _SLOTS.get()
    if state is None or not state.attributes:
        yield
        return
    state.attributes = False
    try:
        yield
    finally:
        state.attributes = True


def _slot(value: Any, attribute: bool) -> Any:
    state = _SLOTS.get()
    if state is None or not isinstance(value, str) or (attribute and not state.attributes):
        return value
    if not value or OPEN in value or CLOSE in value or "\r" in value or "\x00" in value:
        # :empty, slots already, or what the HTML parser rewrites: the skeleton keeps it
        return value
    if type(value) is str:  # text, which the render escapes: no markup in it
        state.values.append((value, attribute, None))
    elif "<" in value:
        return value  # markup: the skeleton keeps it
    else:  # Markup without tags: its text, and what the render wrote
        state.values.append((unescape(value), attribute, str(value)))
    number = len(state.values) - 1
    if number >= len(_PLACEHOLDERS):
        _PLACEHOLDERS.extend(
            Markup(f"{OPEN}{i}{CLOSE}") for i in range(len(_PLACEHOLDERS), number * 2)
        )
    return _PLACEHOLDERS[number]


_PLACEHOLDERS: list[Markup] = [Markup(f"{OPEN}{i}{CLOSE}") for i in range(256)]


# Marked to take the render's context so that Jinja never folds them into a constant while it
# compiles (a placeholder baked into the template): the context itself is not used.
@pass_context
def slot_text(_context: Any, value: Any) -> Any:
    return _slot(value, False)


@pass_context
def slot_attribute(_context: Any, value: Any) -> Any:
    return _slot(value, True)


SLOT_FILTERS: dict[str, Callable[[Any, Any], Any]] = {
    "_slot_text": slot_text,
    "_slot_attr": slot_attribute,
}


class SlotValues(NodeTransformer):
    """Route each ``{{ }}`` of an HTML template through the slot filter its place calls for.

    The place is read from the template text before the expression, in source order: inside
    ``<style>`` or a comment nothing is a slot, inside a tag only the attributes in
    :data:`_SLOTTED_ATTRIBUTES`, elsewhere the value is text. A translated message's
    variables (``{% trans amount=... %}``) are text slots inside the message.
    """

    def __init__(self) -> None:
        self._tail = ""

    def visit_TemplateData(self, node: nodes.TemplateData) -> nodes.Node:  # noqa: N802
        self._tail = (self._tail + node.data)[-2000:]
        return node

    def visit_Output(self, node: nodes.Output) -> nodes.Node:  # noqa: N802  # NodeTransformer API
        kept: list[nodes.Expr] = []
        for child in node.nodes:
            if isinstance(child, nodes.TemplateData):
                self.visit_TemplateData(child)
                kept.append(child)
                continue
            child = self.visit(child)
            name = self._place()
            constant = isinstance(child, nodes.Const) or (
                isinstance(child, nodes.MarkSafe) and isinstance(child.expr, nodes.Const)
            )
            if name is None or constant:  # a constant is the same in every message
                kept.append(child)
            else:
                kept.append(_wrap(child, name))
        node.nodes = kept
        return node

    def visit_Filter(self, node: nodes.Filter) -> nodes.Node:  # noqa: N802
        self.generic_visit(node)
        if node.name in ("_i18n_fill", "_i18n_nfill") and self._place() == "_slot_text":
            for pair in node.kwargs:
                pair.value = _wrap(pair.value, "_slot_text")
        return node

    def _place(self) -> str | None:
        tail = self._tail.lower()
        if tail.rfind("<style") > tail.rfind("</style") or tail.rfind("<!--") > tail.rfind("-->"):
            return None
        if tail.rfind("<") > tail.rfind(">"):
            found = _ATTRIBUTE.search(tail[tail.rfind("<") :])
            return "_slot_attr" if found and found.group(1) in _SLOTTED_ATTRIBUTES else None
        return "_slot_text"


def _wrap(expression: nodes.Expr, name: str) -> nodes.Expr:
    return nodes.Filter(expression, name, [], [], None, None, lineno=expression.lineno)


_TEXT = str.maketrans({"&": "&amp;", "\u00a0": "&nbsp;", "<": "&lt;", ">": "&gt;"})
_ATTR = str.maketrans({"&": "&amp;", "\u00a0": "&nbsp;", '"': "&quot;"})


def serialise(text: str, attribute: bool) -> str:
    """A value's ``text`` as the inliner's HTML serialiser writes it back: escaped the way
    html5ever escapes text or a double-quoted attribute."""
    return text.translate(_ATTR if attribute else _TEXT)


class InlinedShapes:
    """Inlined skeletons, grouped by (tenant, kind, language) with the group's template
    version: a new version (a tenant's override saved or reset) replaces only that group."""

    def __init__(self, inline: Callable[[str], str], *, per_group: int = 64) -> None:
        self._inline = inline
        self._per_group = per_group
        self._groups: dict[tuple[str, ...], tuple[str, dict[str, list[str]]]] = {}
        self._lock = threading.Lock()

    def fill(
        self, group: tuple[str, ...], version: str, skeleton: str, values: list[Value]
    ) -> str | None:
        """``skeleton`` inlined (once for its group and version) with ``values`` filled in;
        None if the skeleton has characters that read as placeholders but are not (then the
        caller renders and inlines this message as it is)."""
        if skeleton.count(OPEN) != len(values) or skeleton.count(CLOSE) != len(values):
            return None
        shapes = self._shapes(group, version)
        parts = shapes.get(skeleton)
        if parts is None:
            parts = _PLACEHOLDER.split(self._inline(skeleton))
            with self._lock:
                if len(shapes) >= self._per_group:
                    shapes.clear()  # a bound, not an LRU: shapes per group are few
                shapes[skeleton] = parts
        out = parts[:]
        for i in range(1, len(out), 2):
            text, attribute, _ = values[int(out[i])]
            out[i] = serialise(text, attribute)
        return "".join(out)

    def _shapes(self, group: tuple[str, ...], version: str) -> dict[str, list[str]]:
        found = self._groups.get(group)
        if found is not None and found[0] == version:
            return found[1]
        with self._lock:
            found = self._groups.get(group)
            if found is None or found[0] != version:
                if len(self._groups) >= 4096:
                    self._groups.clear()
                found = self._groups[group] = (version, {})
            return found[1]

    def forget(self, tenant: str, kind: str) -> None:
        """Drop the entries of ``tenant``'s ``kind`` (all languages): its override changed."""
        with self._lock:
            for group in [g for g in self._groups if g[:2] == (tenant, kind)]:
                del self._groups[group]

    def groups(self) -> dict[tuple[str, ...], tuple[str, dict[str, list[str]]]]:
        """The cache's groups (for tests and the benchmark)."""
        return dict(self._groups)


def written(skeleton: str, values: list[Value]) -> str:
    """The skeleton with its values as the render wrote them (before inlining)."""

    def value(match: re.Match[str]) -> str:
        text, _, wrote = values[int(match.group(1))]
        return str(escape(text)) if wrote is None else wrote

    return _PLACEHOLDER.sub(value, skeleton)
