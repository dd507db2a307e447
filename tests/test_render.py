"""Rendering every kind in every language, and what hostile or odd data cannot do to an email."""

from __future__ import annotations

import json
import re
import shutil
from email import message_from_bytes, policy
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from babel.messages.checkers import python_format
from babel.messages.pofile import read_po, write_po

from mailer.content.formatting import format_money
from mailer.content.i18n import available_languages, choose_language, extract_messages
from mailer.content.kinds import KINDS
from mailer.content.render import TEMPLATES, Renderer, html_to_text
from mailer.content.samples import sample_context
from mailer.errors import HeaderInjectionError, TemplateError
from mailer.outbound.compose import Draft, Envelope, Rendered, build_message, safe_header, to_bytes

LOCALES = ("en", "de", "es", "fr", "ro")
SHIPPED = ("de", "es", "fr", "ro")
# The greeting of every kind, one per language: proof that the body was translated.
GREETING = {
    "en": "Dear ",
    "de": "Guten Tag ",
    "es": "Estimado/a ",
    "fr": "Bonjour ",
    "ro": "Bună ziua, ",
}


def _headline(kind: str, ctx: dict[str, Any]) -> tuple[int, str] | None:
    """The amount each kind states in its text, as (minor units, currency)."""
    doc: dict[str, Any]
    if kind == "subscription_cancelled":
        return None  # says when it ends, not what it costs
    if kind in ("contact_confirmation", "contacts_changed"):
        return None  # about an address, not money
    if kind in ("new_invoice", "thank_you"):
        doc = ctx["invoice"]
        return doc["total_minor"], doc["currency"]
    if kind in ("invoice_reminder", "late_payment_reminder", "query_answer"):
        doc = ctx["invoice"]
        return doc["balance_minor"], doc["currency"]
    field = {
        "payment_plan": ("payment_plan", "total_minor"),
        "credit_note": ("credit_note", "amount_minor"),
        "payment_receipt": ("payment", "amount_minor"),
        "refund": ("refund", "amount_minor"),
        "autopay_failed": ("autopay", "amount_minor"),
        "statement": ("statement", "closing_balance_minor"),
        "overdue_summary": ("overdue", "balance_minor"),
        "estimate": ("estimate", "total_minor"),
    }
    name, key = field.get(kind, ("subscription", "amount_minor"))
    doc = ctx[name]
    return doc[key], doc["currency"]


# -- the registry ----------------------------------------------------------------------------


def test_every_registered_kind_has_templates_and_nothing_else(renderer: Renderer) -> None:
    assert renderer.kinds() == sorted(KINDS)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_sample_context_is_json_and_within_the_kinds_variables(kind: str) -> None:
    ctx = sample_context(kind, locale="fr")
    assert json.loads(json.dumps(ctx)) == ctx
    assert set(ctx) <= KINDS[kind].variables
    assert set(ctx["links"]) == set(KINDS[kind].buttons)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_templates_use_only_the_kinds_variables(renderer: Renderer, kind: str) -> None:
    used: set[str] = set()
    for part in ("subject.txt", "body.txt", "body.html"):
        used |= renderer.names_used((TEMPLATES / "email" / kind / part).read_text("utf-8"))
    assert used <= KINDS[kind].variables
    assert renderer.names_used("{{ payment.amount_minor }}") == {"payment"}


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(TemplateError, match="unknown email kind 'dunning_letter'"):
        sample_context("dunning_letter", locale="en")


# -- every kind in every language ------------------------------------------------------------


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_renders_in_every_language(renderer: Renderer, kind: str, locale: str) -> None:
    ctx = sample_context(kind, locale=locale)
    rendered = renderer.render(kind, ctx)
    english = renderer.render(kind, sample_context(kind, locale="en"))

    assert rendered.subject and "\n" not in rendered.subject
    assert rendered.text.startswith(GREETING[locale])
    assert rendered.html is not None
    assert f'<html lang="{locale}" dir="ltr">' in rendered.html
    # Sentences from separate template lines keep their space: "...due.Please" is a bug.
    assert not re.search(r"[a-zà-ž]\.[A-ZÀ-Ž]", _resources(rendered.html).text)
    if locale != "en":
        assert rendered.subject != english.subject
        assert rendered.text != english.text
    headline = _headline(kind, ctx)
    if headline is not None:
        amount = format_money(*headline, locale)
        assert amount in rendered.text
        assert amount in unescape(rendered.html)
        # Babel's decimal separator for the language: "." in English, "," in the others.
        assert re.search(r"\d\.\d\d" if locale == "en" else r"\d,\d\d", amount)


@pytest.mark.parametrize(
    "locale,subject,money,day",
    [
        ("en", "Invoice INV-1042 from Acme Supplies", "€12,345.62", "Apr 1, 2026"),
        ("de", "Rechnung INV-1042 von Acme Supplies", "12.345,62\xa0€", "01.04.2026"),
        ("es", "Factura INV-1042 de Acme Supplies", "12.345,62\xa0€", "1 abr 2026"),
        ("fr", "Facture INV-1042 de Acme Supplies", "12\u202f345,62\xa0€", "1 avr. 2026"),
        ("ro", "Factura INV-1042 de la Acme Supplies", "12.345,62\xa0EUR", "1 apr. 2026"),
    ],
)
def test_text_money_and_dates_follow_the_language(
    renderer: Renderer, locale: str, subject: str, money: str, day: str
) -> None:
    rendered = renderer.render("new_invoice", sample_context("new_invoice", locale=locale))
    assert rendered.subject == subject
    assert money in rendered.text and day in rendered.text


def test_plural_forms_follow_the_language(renderer: Renderer) -> None:
    def overdue(locale: str, days: int) -> str:
        ctx = sample_context("late_payment_reminder", locale=locale)
        ctx["days_overdue"] = days
        return renderer.render("late_payment_reminder", ctx).text

    assert "(1 day overdue)" in overdue("en", 1)
    assert "(12 days overdue)" in overdue("en", 12)
    assert "(1 zi de întârziere)" in overdue("ro", 1)
    assert "(12 zile de întârziere)" in overdue("ro", 12)
    assert "(25 de zile de întârziere)" in overdue("ro", 25)
    assert "(1 jour de retard)" in overdue("fr", 1)
    assert "(1 Tag überfällig)" in overdue("de", 1)
    assert "(12 Tage überfällig)" in overdue("de", 12)
    assert "still outstanding." in overdue("en", 0)


# -- choosing the language -------------------------------------------------------------------


@pytest.mark.parametrize("customer", ["ja", "xx", "", None, "not a locale"])
def test_a_language_without_translation_falls_back_to_the_tenants(
    renderer: Renderer, customer: str | None
) -> None:
    ctx = sample_context("new_invoice", locale="en")
    ctx["locale"] = customer
    assert renderer.render("new_invoice", ctx, fallback_locale="es").subject.startswith("Factura")
    ctx["fallback_locale"] = "fr"
    rendered = renderer.render("new_invoice", ctx)
    assert rendered.subject.startswith("Facture")
    assert "12\u202f345,62\xa0€" in rendered.text  # formatted in the language it speaks
    del ctx["fallback_locale"]
    assert renderer.render("new_invoice", ctx).subject.startswith("Invoice")


def test_a_regional_locale_uses_its_languages_catalog_and_its_own_formats(
    renderer: Renderer,
) -> None:
    rendered = renderer.render("new_invoice", sample_context("new_invoice", locale="es_MX"))
    assert rendered.subject == "Factura INV-1042 de Acme Supplies"
    assert "EUR12,345.62" in rendered.text  # Mexican Spanish writes money the Mexican way
    assert '<html lang="es-MX"' in (rendered.html or "")


def test_english_customer_of_a_spanish_tenant_reads_english(renderer: Renderer) -> None:
    ctx = sample_context("new_invoice", locale="en_GB")
    assert renderer.render("new_invoice", ctx, fallback_locale="es").subject.startswith("Invoice")


def test_a_message_missing_from_a_catalog_falls_back_along_the_chain(tmp_path: Path) -> None:
    root = tmp_path / "templates"
    shutil.copytree(TEMPLATES, root)
    po = root / "locale" / "es" / "LC_MESSAGES" / "messages.po"
    with po.open("rb") as fh:
        catalog = read_po(fh, locale="es")
    catalog.delete("Thank you for your business.")
    with po.open("wb") as fh:
        write_po(fh, catalog)
    renderer = Renderer(root)
    rendered = renderer.render(
        "new_invoice", sample_context("new_invoice", locale="es"), fallback_locale="fr"
    )
    assert rendered.subject.startswith("Factura")
    assert "Merci de votre confiance." in rendered.text  # the tenant's language fills the gap
    alone = renderer.render("new_invoice", sample_context("new_invoice", locale="es"))
    assert "Thank you for your business." in alone.text  # then the English source


def test_choose_language_reports_the_locale_it_formats_with() -> None:
    locales = TEMPLATES / "locale"
    assert choose_language(locales, "es_MX", "fr").locale == "es_MX"
    assert choose_language(locales, "ja", "ro").locale == "ro"
    assert choose_language(locales, "ja", "it").locale == "en"
    assert choose_language(locales, "de_DE", "fr").locale == "de_DE"  # German text and formats
    assert available_languages(locales) == ["de", "en", "es", "fr", "ro"]


# -- translations are complete ---------------------------------------------------------------


@pytest.fixture(scope="module")
def template_messages() -> dict[Any, Any]:
    return {m.id: m for m in extract_messages(TEMPLATES / "email", TEMPLATES / "pdf") if m.id}


@pytest.mark.parametrize("language", SHIPPED)
def test_every_template_string_is_translated(
    template_messages: dict[Any, Any], language: str
) -> None:
    path = TEMPLATES / "locale" / language / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as fh:
        catalog = read_po(fh, locale=language)
    missing, fuzzy, broken = [], [], []
    for msgid in template_messages:
        entry = catalog.get(msgid)
        strings = entry.string if entry is not None else None
        if isinstance(strings, tuple):
            complete = len(strings) == catalog.num_plurals and all(strings)
        else:
            complete = bool(strings)
        if entry is None or not complete:
            missing.append(msgid)
            continue
        if entry.fuzzy:
            fuzzy.append(msgid)
        try:
            python_format(catalog, entry)  # the same %(placeholders)s as the English
        except Exception as exc:  # TranslationError: collected, to name every bad entry
            broken.append((msgid, str(exc)))
    assert missing == [], (
        f"untranslated in {language} (run python -m mailer.content.i18n, translate)"
    )
    assert fuzzy == [] and broken == []
    stale = [m.id for m in catalog if m.id and m.id not in template_messages]
    assert stale == [], "strings no template uses any more"


def test_the_message_template_is_current(template_messages: dict[Any, Any]) -> None:
    with (TEMPLATES / "locale" / "messages.pot").open("rb") as fh:
        pot = read_po(fh)
    assert {m.id for m in pot if m.id} == set(template_messages)


# -- hostile and odd data --------------------------------------------------------------------


def test_script_in_a_customer_name_is_escaped(renderer: Renderer) -> None:
    ctx = sample_context("late_payment_reminder", locale="en")
    ctx["customer"]["name"] = '<script>alert("x")</script> & Co'
    ctx["tenant"]["name"] = "<b>Acme</b>"
    body = renderer.render("late_payment_reminder", ctx).html or ""
    found = _resources(body)
    assert "script" not in found.tags and "b" not in found.tags
    assert 'Dear <script>alert("x")</script> & Co,' in found.text
    assert "<b>Acme</b>" in found.text


def _draft() -> Draft:
    from datetime import UTC, datetime
    from email.headerregistry import Address

    sender = Address("Acme", addr_spec="ar@acme.example")
    return Draft(
        uid="u1",
        message_id_domain="acme.example",
        date=datetime(2026, 3, 2, tzinfo=UTC),
        to=[Address("Globex", addr_spec="ap@globex.example")],
        envelope=Envelope(from_addr=sender, reply_to=None, mail_from="b@acme.example"),
    )


def test_crlf_in_data_cannot_reach_the_headers(renderer: Renderer) -> None:
    ctx = sample_context("new_invoice", locale="en")
    ctx["tenant"]["name"] = "Acme\r\nBcc: victim@evil.test"
    ctx["customer"]["name"] = "Globex\r\nBcc: victim@evil.test"
    rendered = renderer.render("new_invoice", ctx)
    assert rendered.subject == "Invoice INV-1042 from Acme Bcc: victim@evil.test"
    raw = to_bytes(build_message(rendered, _draft()))
    headers = message_from_bytes(raw, policy=policy.default)
    assert headers["Bcc"] is None
    with pytest.raises(HeaderInjectionError):
        build_message(Rendered(subject="a\r\nBcc: x@evil.test", text=""), _draft())
    with pytest.raises(HeaderInjectionError):
        safe_header("Globex\nBcc: x", name="Subject")


def test_subject_keeps_no_break_spaces(renderer: Renderer) -> None:
    ctx = sample_context("late_payment_reminder", locale="fr")
    rendered = renderer.render("late_payment_reminder", ctx)
    assert rendered.subject == "Facture en retard\xa0: INV-1042 (7\u202f345,62\xa0€)"


def test_right_to_left_and_emoji_names_render(renderer: Renderer) -> None:
    ctx = sample_context("new_invoice", locale="en")
    ctx["customer"]["name"] = "شركة الأمل 🌟"
    ctx["tenant"]["name"] = "Acme 🚀"
    rendered = renderer.render("new_invoice", ctx)
    assert rendered.subject == "Invoice INV-1042 from Acme 🚀"
    assert "<bdi>شركة الأمل 🌟</bdi>" in (rendered.html or "")
    assert "Dear \u2068شركة الأمل 🌟\u2069," in rendered.text  # isolated, so "," stays put
    raw = to_bytes(build_message(rendered, _draft()))
    assert message_from_bytes(raw, policy=policy.default)["Subject"] == rendered.subject


@pytest.mark.parametrize(
    "currency,locale,expected",
    [
        ("JPY", "en", "¥1,234,567"),
        ("JPY", "fr", "1\u202f234\u202f567\xa0JPY"),
        ("KWD", "en", "KWD1,234.567"),
        ("KWD", "es", "1.234,567\xa0KWD"),
    ],
)
def test_zero_and_three_decimal_currencies(
    renderer: Renderer, currency: str, locale: str, expected: str
) -> None:
    ctx = sample_context("late_payment_reminder", locale=locale)
    ctx["invoice"].update(currency=currency, balance_minor=1234567, total_minor=1234567)
    rendered = renderer.render("late_payment_reminder", ctx)
    assert expected.replace("\xa0", "") in rendered.subject.replace("\xa0", "")
    assert expected in format_money(1234567, currency, locale)
    assert format_money(1234567, currency, locale) in rendered.text


# -- overdue_summary: every overdue invoice of one customer in one email ----------------------


def _overdue_summary(locale: str, *, currency: str = "EUR") -> dict[str, Any]:
    ctx = sample_context("overdue_summary", locale=locale)
    ctx["overdue"]["currency"] = currency
    return ctx


@pytest.mark.parametrize("locale", LOCALES)
def test_overdue_summary_lists_every_invoice_and_the_total(renderer: Renderer, locale: str) -> None:
    ctx = _overdue_summary(locale)
    overdue = ctx["overdue"]
    rendered = renderer.render("overdue_summary", ctx)
    html = unescape(rendered.html or "")
    total = format_money(overdue["balance_minor"], "EUR", locale)
    assert overdue["balance_minor"] == sum(i["balance_minor"] for i in overdue["items"])
    assert total in rendered.subject and "3" in rendered.subject
    assert rendered.text.count(total) == 2 and html.count(total) == 2  # the sentence, the total
    for item in overdue["items"]:
        balance = format_money(item["balance_minor"], "EUR", locale)
        assert item["number"] in rendered.text and item["number"] in html
        assert balance in rendered.text and balance in html
    numbers = [i["number"] for i in overdue["items"]]
    assert sorted(numbers, key=rendered.text.index) == numbers  # oldest due first, as given
    assert re.search(r'<a class="btn" href="https://pay\.acme\.example/l/pay-7f3a9c"', html)


@pytest.mark.parametrize(
    "locale,subject,sentence,line",
    [
        (
            "en",
            "Overdue: 3 invoices, €12,936.62 in total",
            "3 of your invoices are overdue, for a total of €12,936.62. ",
            "- Invoice INV-1017, due on Mar 4, 2026 (40 days overdue): €2,471.00",
        ),
        (
            "de",
            "Überfällig: 3 Rechnungen, insgesamt 12.936,62\xa0€",
            "sind 3 Ihrer Rechnungen mit insgesamt 12.936,62\xa0€ überfällig. ",
            "- Rechnung INV-1017, fällig am 04.03.2026 (40 Tage überfällig): 2.471,00\xa0€",
        ),
        (
            "es",
            "3 facturas vencidas, 12.936,62\xa0€ en total",
            "tiene 3 facturas vencidas, por un total de 12.936,62\xa0€. ",
            "- Factura INV-1017, vencida el 4 mar 2026 (40 días de retraso): 2.471,00\xa0€",
        ),
        (
            "fr",
            "3 factures en retard, 12\u202f936,62\xa0€ au total",
            "3 de vos factures restent impayées après leur échéance, pour un total de "
            "12\u202f936,62\xa0€. ",
            "- Facture INV-1017, échue le 4 mars 2026 (40 jours de retard)\xa0: 2\u202f471,00\xa0€",
        ),
        (
            "ro",
            "3 facturi restante, în total 12.936,62\xa0EUR",
            "aveți 3 facturi restante, în valoare totală de 12.936,62\xa0EUR. ",
            "- Factura INV-1017, scadentă la 4 mar. 2026 (40 de zile de întârziere): "
            "2.471,00\xa0EUR",
        ),
    ],
)
def test_overdue_summary_speaks_the_customers_language(
    renderer: Renderer, locale: str, subject: str, sentence: str, line: str
) -> None:
    rendered = renderer.render("overdue_summary", _overdue_summary(locale))
    assert rendered.subject == subject
    assert line in rendered.text.splitlines()
    assert sentence in _resources(rendered.html or "").text.replace("\n", " ")


def test_overdue_summary_of_one_invoice_says_so_once(renderer: Renderer) -> None:
    ctx = _overdue_summary("en")
    ctx["overdue"]["items"] = ctx["overdue"]["items"][-1:]
    ctx["overdue"]["balance_minor"] = 734562
    ctx["days_overdue"] = 12
    rendered = renderer.render("overdue_summary", ctx)
    assert rendered.subject == "Overdue: 1 invoice, €7,345.62 in total"
    assert "1 invoice is overdue, for a total of €7,345.62." in rendered.text
    assert "oldest" not in rendered.text and "oldest" not in (rendered.html or "")
    assert "(12 days overdue)" in rendered.text
    ctx["overdue"]["items"][0]["days_overdue"] = 1
    assert "(1 day overdue)" in renderer.render("overdue_summary", ctx).text


def test_overdue_summary_without_a_pay_link_shows_no_button(renderer: Renderer) -> None:
    ctx = _overdue_summary("en")
    ctx["tenant"] = {"name": "Acme", "email": "ar@acme.example"}
    ctx["links"] = {"view": None, "pay": None}  # what mailer.content.context.party_context builds
    rendered = renderer.render("overdue_summary", ctx)
    assert 'class="btn' not in (rendered.html or "")
    assert "Pay online" not in rendered.text


def test_script_in_a_customer_name_is_escaped_in_the_overdue_summary(
    renderer: Renderer,
) -> None:
    ctx = _overdue_summary("en")
    ctx["customer"]["name"] = '<script>alert("x")</script> & Co'
    ctx["overdue"]["items"][0]["number"] = "<img src=x onerror=alert(1)>"
    rendered = renderer.render("overdue_summary", ctx)
    found = _resources(rendered.html or "")
    assert "script" not in found.tags
    assert found.urls <= {ctx["tenant"]["logo_url"], *ctx["links"].values()}  # no src=x
    assert "&lt;img src=x onerror=alert(1)&gt;" in (rendered.html or "")
    assert 'Dear <script>alert("x")</script> & Co,' in found.text
    assert "<img src=x onerror=alert(1)>" in found.text
    assert 'Dear <script>alert("x")</script> & Co,' in rendered.text  # plain text stays plain


@pytest.mark.parametrize(
    "currency,locale,total,item",
    [
        ("JPY", "en", "¥1,293,662", "¥247,100"),
        ("JPY", "fr", "1\u202f293\u202f662\xa0JPY", "247\u202f100\xa0JPY"),
        ("KWD", "en", "KWD1,293.662", "KWD247.100"),
        ("KWD", "es", "1.293,662\xa0KWD", "247,100\xa0KWD"),
    ],
)
def test_overdue_summary_in_zero_and_three_decimal_currencies(
    renderer: Renderer, currency: str, locale: str, total: str, item: str
) -> None:
    rendered = renderer.render("overdue_summary", _overdue_summary(locale, currency=currency))
    html = unescape(rendered.html or "")
    assert total in rendered.subject and total in rendered.text and total in html
    assert item in rendered.text and item in html


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ '{0.__class__}'.format(1) }}",
        "{{ invoice.lines.__class__ }}",
    ],
)
def test_sandbox_escapes_are_refused(renderer: Renderer, source: str) -> None:
    with pytest.raises(TemplateError, match="sandbox"):
        renderer.render_string(source, sample_context("new_invoice", locale="en"))


def test_a_misspelt_variable_is_named(renderer: Renderer, tmp_path: Path) -> None:
    ctx = sample_context("new_invoice", locale="en")
    with pytest.raises(TemplateError, match="'invoce' is undefined"):
        renderer.render_string("{{ invoce.number }}", ctx)
    with pytest.raises(TemplateError, match="no attribute 'numbr'"):
        renderer.render_string("{{ invoice.numbr }}", ctx, html=False)
    root = tmp_path / "templates"
    shutil.copytree(TEMPLATES, root)
    (root / "email" / "new_invoice" / "subject.txt").write_text("{{ custmer.name }}")
    with pytest.raises(TemplateError, match=r"new_invoice/subject\.txt: 'custmer' is undefined"):
        Renderer(root).render("new_invoice", ctx)


def test_a_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    root = tmp_path / "templates"
    shutil.copytree(TEMPLATES, root)
    (root / "email" / "new_invoice" / "body.txt").write_text("ok\n{% if %}\n")
    with pytest.raises(TemplateError, match=r"new_invoice/body\.txt:2: "):
        Renderer(root).render("new_invoice", sample_context("new_invoice", locale="en"))


def test_an_unknown_kind_is_a_template_error(renderer: Renderer) -> None:
    with pytest.raises(TemplateError, match="no template 'no_such_kind/subject.txt'"):
        renderer.render("no_such_kind", sample_context("new_invoice", locale="en"))
    with pytest.raises(TemplateError, match="no template"):
        renderer.render("../../etc", sample_context("new_invoice", locale="en"))


def test_wrong_data_types_become_template_errors(renderer: Renderer) -> None:
    ctx = sample_context("new_invoice", locale="en")
    ctx["invoice"]["total_minor"] = "a lot"
    with pytest.raises(TemplateError, match="new_invoice/"):
        renderer.render("new_invoice", ctx)


def test_a_link_that_is_not_http_is_refused(renderer: Renderer) -> None:
    ctx = sample_context("new_invoice", locale="en")
    ctx["links"]["pay"] = "javascript:alert(1)"
    with pytest.raises(TemplateError, match="only http"):
        renderer.render("new_invoice", ctx)


# -- the HTML --------------------------------------------------------------------------------


class _Resources(HTMLParser):
    """Every URL the HTML would load or link to, and every tag name."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: set[str] = set()
        self.tags: set[str] = set()
        self.text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for name, value in attrs:
            if name in ("src", "href", "background", "srcset", "action") and value:
                self.urls.add(value)

    def handle_data(self, data: str) -> None:
        self.text += data


def _resources(html: str) -> _Resources:
    parser = _Resources()
    parser.feed(html)
    return parser


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_html_loads_nothing_but_the_logo_and_links_only_where_it_should(
    renderer: Renderer, kind: str
) -> None:
    ctx = sample_context(kind, locale="en")
    html = renderer.render(kind, ctx).html or ""
    found = _resources(html)
    allowed = {ctx["tenant"]["logo_url"], *ctx["links"].values()}
    if kind == "contact_confirmation":  # its one link is the request's own, not a button
        allowed.add(ctx["contact"]["confirm_url"])
    assert found.urls <= allowed
    assert ctx["tenant"]["logo_url"] in found.urls
    assert not found.tags & {"link", "script", "iframe", "object", "embed", "form"}
    assert "url(" not in html and "@import" not in html


def test_css_is_inlined_and_the_style_block_kept(renderer: Renderer) -> None:
    html = renderer.render("new_invoice", sample_context("new_invoice", locale="en")).html or ""
    assert '<body style="' in html
    assert re.search(r'<a class="btn" href="[^"]+" style="[^"]*background: #0b5cad', html)
    assert "<style>" in html and "@media only screen" in html  # for clients that read it
    assert "<table" in html and 'role="presentation"' in html


def test_a_missing_logo_shows_the_tenant_name(renderer: Renderer) -> None:
    ctx = sample_context("new_invoice", locale="en")
    for logo in (None, "", "javascript:alert(1)", "data:image/png;base64,AAAA"):
        ctx["tenant"]["logo_url"] = logo
        html = renderer.render("new_invoice", ctx).html or ""
        assert "<img" not in html
        assert re.search(r'class="header"[^>]*>\s*Acme Supplies', html)
    del ctx["tenant"]["logo_url"]
    assert "<img" not in (renderer.render("new_invoice", ctx).html or "")


def test_a_bare_invoice_context_renders(renderer: Renderer) -> None:
    """What mailer.content.context.invoice_context builds: no branding, no links, no fallback."""
    for kind in ("new_invoice", "invoice_reminder", "late_payment_reminder"):
        ctx = sample_context(kind, locale="en")
        ctx["tenant"] = {"name": "Acme", "email": "ar@acme.example"}
        ctx["links"] = {"view": None, "pay": None}
        rendered = renderer.render(kind, ctx)
        assert "<img" not in (rendered.html or "")
        assert "Pay online" not in rendered.text
        assert 'class="btn' not in (rendered.html or "")
        assert "#1f6feb" in (rendered.html or "")  # the default brand colour


def test_broken_or_hostile_tenant_css_cannot_hurt(renderer: Renderer) -> None:
    ctx = sample_context("new_invoice", locale="en")
    ctx["tenant"]["css"] = (
        ".footer { color: #123456 } }}} @import url(http://evil.test/x.css); "
        "a { background: url(http://evil.test/p.png); color: red } "
        ".x { content: '</style><script>alert(1)</script>' } "
        "p { b\\61ckground: u\\72l(x) } td { behavior: url(x.htc) } .y { color: blue"
    )
    ctx["tenant"]["brand_color"] = "red; background: url(http://evil.test/b.png)"
    body = renderer.render("new_invoice", ctx).html or ""
    assert "evil.test" not in body and "url(" not in body and "<script" not in body
    assert re.search(r'class="footer" style="[^"]*color: #123456', body)
    assert "#1f6feb" in body  # the unusable brand colour fell back to the default
    ctx["tenant"]["css"] = "\x00{{{{ ;;; @media {"
    assert renderer.render("new_invoice", ctx).html


def test_button_text_contrasts_with_a_light_brand_colour(renderer: Renderer) -> None:
    ctx = sample_context("new_invoice", locale="en")
    ctx["tenant"]["brand_color"] = "#ffd400"
    html = renderer.render("new_invoice", ctx).html or ""
    assert re.search(r'class="btn"[^>]*style="[^"]*color: #1f2933', html)


def test_a_kind_without_body_txt_gets_its_text_from_the_html(tmp_path: Path) -> None:
    root = tmp_path / "templates"
    shutil.copytree(TEMPLATES, root)
    (root / "email" / "new_invoice" / "body.txt").unlink()
    rendered = Renderer(root).render("new_invoice", sample_context("new_invoice", locale="es"))
    assert "Le enviamos la factura INV-1042 por 12.345,62" in rendered.text
    assert "<" not in rendered.text and "{" not in rendered.text  # no markup, no CSS
    assert "Acme Supplies SRL" in rendered.text


def test_html_to_text_keeps_links_and_drops_markup() -> None:
    text = html_to_text(
        "<html><head><style>p{color:red}</style></head><body><p>Hi &amp; bye</p>"
        '<a href="https://x.example/pay">Pay now</a></body></html>'
    )
    assert "Hi & bye" in text and "https://x.example/pay" in text
    assert "color" not in text


def test_invoice_context_carries_the_tenants_branding_and_language(renderer: Renderer) -> None:
    from datetime import UTC, datetime

    from mailer.content.context import invoice_context
    from mailer.ledger.models import Customer, Invoice, Tenant
    from mailer.tenant_config import BrandingConfig

    due = datetime(2026, 4, 1, tzinfo=UTC)
    tenant = Tenant(slug="acme", name="Acme", email="ar@acme.example", locale="es")
    customer = Customer(tenant_id=1, external_id="C-1", name="Globex", locale="ja")
    invoice = Invoice(
        tenant_id=1, customer_id=1, external_id="I-1", number="INV-7", content_hash="x",
        currency="EUR", total_minor=1000, balance_minor=1000, issued_at=due, due_at=due,
    )  # fmt: skip
    branding = BrandingConfig(
        logo_url="https://acme.example/logo.png",
        brand_color="#aa3300",
        address=["Acme SRL", "Strada 1"],
        footer="CUI RO123",
    )
    ctx = invoice_context(
        tenant=tenant, customer=customer, invoice=invoice, now=due, branding=branding.as_context()
    )
    assert ctx["fallback_locale"] == "es"
    assert ctx["tenant"]["address"] == ["Acme SRL", "Strada 1"]
    rendered = renderer.render("invoice_reminder", ctx)
    html = rendered.html or ""
    assert rendered.subject.startswith("Recordatorio")  # no Japanese catalog: the tenant's
    assert re.search(r'<img [^>]*src="https://acme.example/logo.png"', html) and "#aa3300" in html
    assert "Strada 1" in rendered.text and "CUI RO123" in html
    bare = invoice_context(tenant=tenant, customer=customer, invoice=invoice, now=due)
    assert bare["tenant"] == {"name": "Acme", "email": "ar@acme.example"}
    assert "<img" not in (renderer.render("invoice_reminder", bare).html or "")


def test_literal_and_computed_messages_translate_alike(renderer: Renderer) -> None:
    """Literal msgids are translated while compiling; a msgid in a variable at render time."""
    ctx: dict[str, Any] = {"locale": "es", "msg": "Pay now", "who": "<b>"}
    assert renderer.render_string('{{ _("Pay now") }}|{{ _(msg) }}', ctx) == (
        "Pagar ahora|Pagar ahora"
    )
    assert renderer.render_string("{% trans %}Pay now{% endtrans %}", ctx) == "Pagar ahora"
    # Variables are escaped into the (trusted) translated markup, in the HTML part only.
    html = renderer.render_string('{{ _("Dear %(name)s,", name=who) }}', ctx)
    text = renderer.render_string('{{ _("Dear %(name)s,", name=who) }}', ctx, html=False)
    assert html.endswith("&lt;b&gt;:") and text.endswith("<b>:")
    plural = (
        '{{ ngettext("Your %(plan)s subscription renews in %(count)s day", '
        '"Your %(plan)s subscription renews in %(count)s days", n, plan="X", count=n) }}'
    )
    days = {n: renderer.render_string(plural, {"locale": "ro", "n": n}) for n in (1, 3, 20)}
    assert days == {
        1: "Abonamentul X se reînnoiește peste 1 zi",
        3: "Abonamentul X se reînnoiește peste 3 zile",
        20: "Abonamentul X se reînnoiește peste 20 de zile",
    }
    # One compiled template set per language: English is not served Spanish text.
    assert renderer.render_string('{{ _("Pay now") }}', {"locale": "en"}) == "Pay now"
