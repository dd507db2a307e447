"""The attack catalogue, sandbox family: Jinja sandbox escapes in tenant templates, and templates
that try to exhaust memory.

Part of the catalogue split by attack family (``tests/test_attacks_*.py``); every attack goes
through the real paths, on SQLite and PostgreSQL where a database is involved.
"""

from __future__ import annotations

import email
import email.policy
import re
import time
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlmodel import Session, select

from dunmail.app import Services
from mailer.content.models import TemplateOverride
from mailer.content.overrides import validate_override
from mailer.content.render import Renderer
from mailer.content.samples import sample_context
from mailer.errors import TemplateError
from mailer.outbound.memory import MemoryTransport
from tests.test_bounce_ingest import _sent
from tests.test_web_ui import fast_argon2

__all__ = ["fast_argon2"]  # a fixture used here, imported from test_web_ui


@pytest.fixture
def relay_env(
    two_tenant_env: tuple[Services, MemoryTransport],
) -> tuple[Services, MemoryTransport]:
    """conftest's ``relay_env`` plus a second tenant, "beta" (what ``web_server`` serves)."""
    return two_tenant_env


# -- 2. Jinja sandbox escapes --------------------------------------------------------------------

ESCAPES = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ joiner.__init__.__globals__.os }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{% for x in ().__class__.__base__.__subclasses__() %}{{ x }}{% endfor %}",
    "{{ config }}",
    "{{ config.items() }}",
    "{{ request }}",
    "{{ request.application.__globals__ }}",
    "{{ range.__self__ }}",
    "{{ range.__call__.__self__.__dict__ }}",
    "{{ range(100000000) | list | length }}",
    "{{ '{0.__class__}'.format(1) }}",
    "{{ '{0.__class__.__mro__}'.format(invoice) }}",
    "{{ '{0[__class__]}'.format(invoice) }}",
    "{{ '{a.__class__}'.format_map({'a': 1}) }}",
    "{{ '' | attr('__class__') }}",
    "{{ invoice | attr('_' ~ '_class_' ~ '_') }}",
    "{{ (invoice | attr('__cl' ~ 'ass__')).__base__ }}",
    "{{ gettext.__globals__ }}",
    "{{ _.__closure__ }}",
    "{{ invoice['__class__'] }}",
    "{% set x = cycler %}{{ x.__init__ }}",
    "{{ dict.__class__ }}",
    "{% include '/etc/passwd' %}",
    "{% include '../../../../etc/passwd' %}",
    "{% import '../pdf/invoice.html' as x %}",
]
# What leaking Python internals into an email would look like.
INTERNALS = re.compile(r"<class |<function |<built-in|<module |__\w+__|root:x:0:0|mro|globals")


@pytest.mark.parametrize("part", ["text", "html"])
@pytest.mark.parametrize("source", ESCAPES)
def test_sandbox_escapes_are_refused_when_saved_and_at_render(
    source: str, part: str, renderer: Renderer
) -> None:
    full = (
        f'{{% extends "_layout.html" %}}{{% block content %}}{source}{{% endblock %}}'
        if part == "html"
        else source
    )
    with pytest.raises(TemplateError) as refused:
        validate_override("new_invoice", part, full, renderer=renderer)
    assert re.match(r"line \d+: |when rendered with sample data: ", str(refused.value))
    # Stored by hand past the check, it still cannot run: the sandbox refuses at render time,
    # or it renders without reaching anything internal.
    context = sample_context("new_invoice", locale="en")
    try:
        rendered = renderer.render("new_invoice", context, overrides={part: full})
    except TemplateError as exc:
        assert "Traceback" not in str(exc)
        return
    assert not INTERNALS.search(rendered.text + (rendered.html or ""))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the database plays no part
async def test_a_refused_template_is_never_stored_or_sent(
    relay_env: tuple[Services, MemoryTransport],
) -> None:
    services, transport = relay_env
    for source in ESCAPES[:8]:
        with pytest.raises(TemplateError):
            services.desk.save_template(
                "new_invoice", "text", source, tenant="acme", updated_by="t"
            )
    with Session(services.engine) as session:
        assert session.exec(select(TemplateOverride)).all() == []
    sent = await _sent(services, transport)
    assert not INTERNALS.search(sent.data.decode("ascii", "replace"))


# -- 9. templates that run forever or write without end -----------------------------------------

LAYOUT = '{% extends "_layout.html" %}{% block content %}'
# Each would hold the engine (or ``template set``) for hours, or take gigabytes, unmetered.
FOREVER = [
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% macro twice(n) %}{% if n %}{{ twice(n - 1) }}{{ twice(n - 1) }}{% endif %}{% endmacro %}"
    "{{ twice(60) }}",
]
ENDLESS = [
    "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
    "{% endfor %}{{ ns.s | length }}",
    "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}"
    "{% endfor %}{{ ns.s | length }}",
    "{% for i in range(100000) %}{{ 'x' * 99999 }}{% endfor %}",
    "{% set s %}{% for i in range(100000) %}{{ 'x' * 99999 }}{% endfor %}{% endset %}{{ s }}",
    "{% macro m() %}{% for i in range(100000) %}<p>{{ 'y' * 999 }}</p>{% endfor %}{% endmacro %}"
    "{{ m() | length }}",
    "{{ ('x' * 99999) | replace('', 'x' * 99999) }}",
    "{{ 'x' | center(1000000000) }}",
    "{{ 'x'.ljust(1000000000) }}",
    "{{ 'a\nb' | indent(1000000000) }}",
    "{{ '{:>999999999}'.format(1) }}",
    "{{ '%999999999s' % 'x' }}",
    "{{ '%999999999s' | format('x') }}",
]


@pytest.mark.parametrize("source", FOREVER + ENDLESS)
def test_a_template_past_its_time_or_size_budget_is_refused_when_saved(
    source: str, renderer: Renderer
) -> None:
    from mailer.content.sandbox import SAVE_BUDGET

    started = time.monotonic()
    with pytest.raises(TemplateError) as refused:
        validate_override(
            "new_invoice", "html", f"{LAYOUT}{source}{{% endblock %}}", renderer=renderer
        )
    took = time.monotonic() - started
    assert took < SAVE_BUDGET.seconds + 3, f"took {took:.1f} s"
    reason = str(refused.value)
    assert "refused by the sandbox: " in reason and "Traceback" not in reason
    assert re.search(r"longer than 2 s|more than 1,000,000 characters|size over|width", reason)


@pytest.mark.parametrize("source", FOREVER + ENDLESS[:3])
def test_a_stored_template_past_the_budget_fails_its_render_in_time(source: str) -> None:
    """Saved before the budget existed: the render stops at the budget with an error that
    names the template, and the engine goes on (the outbox records the failure)."""
    from mailer.content.sandbox import RenderBudget

    metered = Renderer(budget=RenderBudget(seconds=0.3, max_chars=200_000))
    context = sample_context("new_invoice", locale="en")
    started = time.monotonic()
    with pytest.raises(TemplateError, match=r"^new_invoice/body.html \(override\):\d+: refused"):
        metered.render(
            "new_invoice", context, overrides={"html": f"{LAYOUT}{source}{{% endblock %}}"}
        )
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the database plays no part
async def test_template_set_of_a_template_that_runs_forever_answers_in_seconds(
    tmp_path: Path, db_url: str
) -> None:
    from tests.test_cli import dunmail, write_config

    config = write_config(tmp_path, db_url, 2525)
    file = tmp_path / "forever.html"
    file.write_text(f"{LAYOUT}\n<p>Hello</p>\n{FOREVER[0]}\n{{% endblock %}}\n")
    started = time.monotonic()
    refused = dunmail(config, "template", "set", "new_invoice", str(file), "--part", "html")
    assert time.monotonic() - started < 15
    assert refused.returncode == 2
    assert f"{file}: new_invoice html template refused: line 3: refused by the sandbox: " in (
        refused.stderr.replace("\n", " ")
    )
    assert "longer than 2 s" in refused.stderr


# -- 9. markup an email may not carry: scripts, script links, remote images ---------------------

UNSAFE_HTML = [
    ("<p>Hi</p><script>alert(1)</script>", "<script> is not allowed"),
    ("<scr{{ '' }}ipt>alert(1)</script>", "<script> is not allowed"),
    ('<a href="javascript:alert(1)">pay</a>', "only http(s) links are allowed"),
    ('<a href=" JaVaScRiPt:alert(1)">pay</a>', "only http(s) links are allowed"),
    ('<a href="data:text/html,<script>alert(1)</script>">pay</a>', "only http(s) links"),
    ('<img src="https://tracker.example/open.png">', "loads no image but the tenant's logo"),
    ('<p style="background:url(https://tracker.example/t.png)">x</p>', "CSS that loads"),
    ('<p style="background:u\\72l(https://tracker.example/t.png)">x</p>', "CSS that loads"),
    ("<img src=x onerror=alert(1)>", "event handlers"),
    ('<p onmouseover="alert(1)">x</p>', "event handlers"),
    ('<iframe src="https://evil.example/"></iframe>', "<iframe> is not allowed"),
    ("<style>@import url(https://evil.example/x.css);</style>", "<style> is not allowed"),
    ('<form action="https://evil.example/"><input name="card"></form>', "<form> is not allowed"),
]
# What none of them may leave in the email that is sent.
LEFTOVERS = re.compile(
    r"<script|javascript:|tracker\.example|onerror|onmouseover|<iframe|"
    r"evil\.example|<form|<input|data:text",
    re.IGNORECASE,
)


@pytest.mark.parametrize(("markup", "reason"), UNSAFE_HTML)
def test_unsafe_markup_in_an_html_override_is_refused_when_saved(
    markup: str, reason: str, renderer: Renderer
) -> None:
    with pytest.raises(TemplateError) as refused:
        validate_override(
            "new_invoice", "html", f"{LAYOUT}{markup}{{% endblock %}}", renderer=renderer
        )
    assert str(refused.value).startswith("when rendered with sample data: ")
    assert reason in str(refused.value)


def test_the_logo_http_links_and_the_shared_buttons_are_still_allowed(renderer: Renderer) -> None:
    source = (
        f'{LAYOUT}<img src="{{{{ tenant.logo_url }}}}" alt="logo">'
        '<p style="color: #333">Dear {{ customer.name }},</p>'
        '<a href="https://acme.example/terms">terms</a> <a href="{{ links.view | link }}">view</a>'
        '{% set buttons = [(links.view, "View", true)] %}{% include "_buttons.html" %}'
        "{% endblock %}"
    )
    validate_override("new_invoice", "html", source, renderer=renderer)
    html = renderer.render(
        "new_invoice", sample_context("new_invoice", locale="en"), overrides={"html": source}
    ).html
    assert html is not None
    assert '<img src="https://acme.example/logo.png" alt="logo">' in html
    assert 'href="https://acme.example/terms"' in html and 'class="btn"' in html


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the database plays no part
async def test_an_unsafe_override_stored_before_the_check_is_cleaned_when_sent(
    relay_env: tuple[Services, MemoryTransport],
) -> None:
    services, transport = relay_env
    markup = "".join(m for m, _ in UNSAFE_HTML) + "<p>Please pay INV-1042.</p>"
    with Session(services.engine) as session:  # as an older version stored it: unchecked
        session.add(
            TemplateOverride(
                tenant_id=services.tenants.id("acme"),
                kind="new_invoice",
                part="html",
                source=f"{LAYOUT}{markup}{{% endblock %}}",
                updated_by="t",
                updated_at=services.clock.now(),
            )
        )
        session.commit()
    sent = await _sent(services, transport)
    message = email.message_from_bytes(sent.data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    html = message.get_body(preferencelist=("html",))
    assert html is not None
    content = html.get_content()
    assert "Please pay INV-1042." in content
    assert not LEFTOVERS.search(content), LEFTOVERS.search(content)
