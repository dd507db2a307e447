"""Render once, fill per message (mailer/content/slots.py): each HTML shape is inlined once.

The compiled-once output is compared byte for byte with what the renderer did before, which
inlined every message's CSS (a renderer whose shape cache always declines does exactly that).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from mailer.content.i18n import available_languages
from mailer.content.render import TEMPLATES, Renderer
from mailer.content.samples import sample_context
from mailer.content.slots import CLOSE, OPEN

LANGUAGES = sorted({"en", *available_languages(TEMPLATES / "locale")})


class _Counting:
    """Counts css-inline calls (the renderer's ``_inline``)."""

    def __init__(self, renderer: Renderer) -> None:
        self.calls = 0
        inline = renderer._inline

        def counted(html: str) -> str:
            self.calls += 1
            return inline(html)

        renderer._inline = counted  # type: ignore[method-assign]
        renderer.shapes._inline = counted


@pytest.fixture(scope="module")
def once() -> Renderer:
    return Renderer()


@pytest.fixture(scope="module")
def each() -> Renderer:
    """Today's behaviour: every message inlined as rendered."""
    renderer = Renderer()
    renderer.shapes.fill = lambda *args, **kwargs: None  # type: ignore[method-assign]
    return renderer


def _override(renderer: Renderer, kind: str) -> dict[str, str]:
    """A tenant's HTML override: the built-in body with a paragraph of its own added."""
    source = renderer.builtin_source(kind, "html")
    assert source is not None
    extra = '<p class="note">Questions? Call us on <strong>{{ tenant.email }}</strong>.</p>\n'
    return {"html": source.replace("{% endblock %}\n", extra + "{% endblock %}\n", 1)}


def _variants(kind: str, language: str) -> list[dict[str, Any]]:
    """The sample, the same shape with other values (escaping, no-break spaces, quotes), and a
    branded tenant whose CSS selects on attributes."""
    first = sample_context(kind, locale=language)
    second = copy.deepcopy(first)
    second["customer"]["name"] = 'O\'Brien & "Sons" <Ltd>\u00a0Co\r\nNUL\x00 '
    for value in second.values():  # document numbers, written bare in text and tables
        if isinstance(value, dict) and isinstance(value.get("number"), str):
            value["number"] += " \r\n&amp; <b>\x00"
    branded = copy.deepcopy(first)
    branded["tenant"] = {
        **branded["tenant"],
        "name": "Branded & Co",
        "brand_color": "#aa3300",
        "css": 'a[href^="https"] { color: #123456; } .content p { font-size: 16px; }',
    }
    return [first, second, branded]


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("overridden", [False, True], ids=["built-in", "override"])
def test_once_equals_each(once: Renderer, each: Renderer, language: str, overridden: bool) -> None:
    for kind in once.kinds():
        overrides = _override(once, kind) if overridden else None
        for context in _variants(kind, language):
            for _ in range(2):  # the second render fills a cached shape
                got = once.render(kind, copy.deepcopy(context), overrides=overrides)
                want = each.render(kind, copy.deepcopy(context), overrides=overrides)
                assert got == want, (kind, language, overridden)


def test_fresh_link_equals_each(once: Renderer, each: Renderer) -> None:
    for language in LANGUAGES:
        context = {**sample_context("invoice_reminder", locale=language), "fresh_link": True}
        assert once.render("invoice_reminder", dict(context)) == each.render(
            "invoice_reminder", dict(context)
        )


def test_value_that_reads_as_placeholder_falls_back(once: Renderer, each: Renderer) -> None:
    context = sample_context("invoice_reminder", locale="en")
    context["customer"]["name"] = f"Evil {OPEN}0{CLOSE} {CLOSE}"
    got = once.render("invoice_reminder", copy.deepcopy(context))
    assert got == each.render("invoice_reminder", copy.deepcopy(context))


def test_no_css_inline_for_a_compiled_shape() -> None:
    renderer = Renderer()
    counter = _Counting(renderer)
    context = sample_context("invoice_reminder", locale="en")
    renderer.render("invoice_reminder", copy.deepcopy(context))
    assert counter.calls == 1  # the shape, once
    for number in range(20):
        other = copy.deepcopy(context)
        other["customer"]["name"] = f"Customer {number}"
        other["invoice"]["number"] = f"INV-{number:05d}"
        other["links"] = {k: f"{v}-{number}" for k, v in other["links"].items() if v}
        renderer.render("invoice_reminder", other)
    assert counter.calls == 1


def _render_all(renderer: Renderer, tenants: list[str], kinds: list[str], **kw: Any) -> None:
    for tenant in tenants:
        for kind in kinds:
            for language in ("en", "fr"):
                context = sample_context(kind, locale=language)
                context["tenant"] = {**context["tenant"], "name": tenant}
                renderer.render(kind, context, **kw)


def test_saving_an_override_invalidates_only_its_tenant_and_kind() -> None:
    renderer = Renderer()
    kinds = ["invoice_reminder", "new_invoice"]
    _render_all(renderer, ["A", "B"], kinds)
    before = renderer.shapes.groups()
    assert len(before) == 2 * 2 * 2
    # Tenant A saves an override of invoice_reminder: its next render uses the new version.
    context = sample_context("invoice_reminder", locale="en")
    context["tenant"] = {**context["tenant"], "name": "A"}
    renderer.render("invoice_reminder", context, overrides=_override(renderer, "invoice_reminder"))
    after = renderer.shapes.groups()
    changed = {group for group in before if after[group] is not before[group]}
    assert {g[:2] for g in changed} == {("A", "invoice_reminder")}
    # Forgetting (what saving or resetting calls) drops (A, invoice_reminder, *) only.
    renderer.forget("A", "invoice_reminder")
    left = renderer.shapes.groups()
    assert {g for g in before if g not in left} == {
        g for g in before if g[:2] == ("A", "invoice_reminder")
    }
    for group in left:
        assert left[group] is after[group]
