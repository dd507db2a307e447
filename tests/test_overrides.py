"""Tenant template overrides: refused with line and reason when saved, used when sent."""

from __future__ import annotations

import email
import json
from collections.abc import Iterator
from email import policy
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from dunmail.app import Services
from mailer.content.models import TemplateOverride
from mailer.content.overrides import MAX_SOURCE_BYTES, validate_override
from mailer.content.render import Renderer
from mailer.errors import TemplateError
from tests.conftest import DEMO_DOC
from tests.smtpd import RecordingServer
from tests.test_cli import AT, Sink, dunmail, start_sink, write_config

LAYOUT = '{% extends "_layout.html" %}\n{% block content %}\n'


def _refusal(kind: str, part: str, source: str, renderer: Renderer) -> str:
    with pytest.raises(TemplateError) as caught:
        validate_override(kind, part, source, renderer=renderer)
    return str(caught.value)


# -- validation (pure) ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("part", "source", "expected"),
    [
        pytest.param(
            "html",
            LAYOUT + "{{ invoice.number }\n{% endblock %}",
            "line 3: unexpected",
            id="syntax",
        ),
        pytest.param(
            "text", "Hi\n{% if x %}\n{% endif %}", "line 2: unknown variable 'x'", id="unknown-name"
        ),
        pytest.param(
            "text",
            "Dear {{ customer.name }},\n\n{{ invoice.totl }}\n",
            "line 3: 'dict object' has no attribute 'totl'",
            id="unknown-attribute",
        ),
        pytest.param(
            "text",
            "{% for line in invoice.lines %}{{ line.description }}\n{% endfor %}\n{{ line }}",
            "line 3: unknown variable 'line'",
            id="loop-variable-outside-its-loop",
        ),
        pytest.param(
            "text",
            "Hi\n{{ ''.__class__.__mro__ }}",
            "line 2: access to '__class__' is not allowed",
            id="dunder-attribute",
        ),
        pytest.param(
            "text",
            "Hi\n\n\n{{ '' | attr('__class__') }}",
            "line 4: access to '__class__' is not allowed",
            id="attr-filter",
        ),
        pytest.param(
            "text",
            "Hi\n{{ invoice['_secret'] }}",
            "line 2: access to '_secret' is not allowed",
            id="private-item",
        ),
        pytest.param(
            "text",
            "Hi\n\n{{ invoice.total_minor | money }}",
            "line 3: TypeError",
            id="filter-missing-argument",
        ),
        pytest.param(
            "text",
            "{{ links.view | link }}\n{{ links.update_payment | link }}",
            "line 2: 'dict object' has no attribute 'update_payment'",
            id="link-this-kind-lacks",
        ),
        pytest.param(
            "subject",
            "Invoice {{ invoice.number }}\nfrom {{ tenant.name }}",
            "line 2: a subject must render to one line",
            id="two-line-subject",
        ),
        pytest.param(
            "subject", "{{ '' }}", "line 1: the subject renders empty", id="empty-subject"
        ),
    ],
)
def test_refused_with_line_and_reason(
    part: str, source: str, expected: str, renderer: Renderer
) -> None:
    assert _refusal("new_invoice", part, source, renderer).startswith(expected)


def test_the_mro_escape_is_refused_even_when_hidden_from_the_static_check(
    renderer: Renderer,
) -> None:
    # Built from strings, the attribute name is invisible to the AST walk: the sandbox render
    # against the sample context refuses it instead.
    source = "Hi\n{{ (invoice | attr('_' ~ '_class_' ~ '_')).mro() }}"
    assert _refusal("new_invoice", "text", source, renderer).startswith(
        "line 2: refused by the sandbox"
    )


def test_unknown_kind_part_and_oversize_are_refused(renderer: Renderer) -> None:
    assert "unknown email kind 'nope'" in _refusal("nope", "text", "x", renderer)
    assert "unknown template part 'body'" in _refusal("new_invoice", "body", "x", renderer)
    big = "x" * (MAX_SOURCE_BYTES + 1)
    assert "the limit is 65,536" in _refusal("new_invoice", "text", big, renderer)


def test_names_are_checked_per_kind(renderer: Renderer) -> None:
    validate_override("new_invoice", "subject", "{{ invoice.number }}", renderer=renderer)
    message = _refusal("payment_receipt", "subject", "{{ invoice.number }}", renderer)
    assert message.startswith("line 1: unknown variable 'invoice'")
    assert "payment" in message  # says what the kind may use


def test_builtin_templates_pass_as_overrides(renderer: Renderer) -> None:
    """What ``dunmail template show`` prints is a valid starting point for every kind."""
    for kind in renderer.kinds():
        for part in ("subject", "text", "html"):
            source = renderer.builtin_source(kind, part)
            if source is not None:
                validate_override(kind, part, source, renderer=renderer)


def test_an_html_override_keeps_the_layout_and_drives_the_text_part(renderer: Renderer) -> None:
    source = LAYOUT + "<p>Pay {{ invoice.number }} today, {{ customer.name }}.</p>\n{% endblock %}"
    validate_override("new_invoice", "html", source, renderer=renderer)
    from mailer.content.samples import sample_context

    context = sample_context("new_invoice", locale="en")
    rendered = renderer.render("new_invoice", context, overrides={"html": source})
    assert "Pay INV-1042 today, Globex Corporation." in rendered.html
    assert "Acme Supplies" in rendered.html  # the layout's header and footer are still there
    assert "Pay INV-1042 today" in rendered.text
    assert rendered.subject == "Invoice INV-1042 from Acme Supplies"


# -- stored and used when sending -------------------------------------------------------------


@pytest.fixture
def transport() -> None:
    """This module's services send over SMTP, to ``smtpd``."""
    return None


@pytest.fixture
def services_config(smtpd: RecordingServer) -> dict[str, Any]:
    """This module's shared ``services``: the relay is ``smtpd``; a second tenant, "beta"."""
    beta = {"name": "Beta Tools", "email": "ar@beta.example"}
    relay = {"domain": "relay.example", "host": smtpd.host, "port": smtpd.port}
    return {"relay": relay, "tenants": {"beta": beta}}


@pytest.fixture
def two_tenants(services: Services) -> Services:
    """The shared services with DEMO_DOC imported for both tenants."""
    for slug in ("acme", "beta"):
        assert services.ledger.import_document(DEMO_DOC, tenant=slug).errors == []
    return services


def _subjects(smtpd: RecordingServer) -> list[str]:
    return [
        str(email.message_from_bytes(e, policy=policy.default)["Subject"])
        # one transaction per recipient carries the same bytes: one email each
        for e in dict.fromkeys(e.content for e in smtpd.envelopes)
    ]


async def test_a_saved_subject_is_sent_for_that_tenant_only(
    two_tenants: Services, smtpd: RecordingServer
) -> None:
    services = two_tenants
    services.desk.save_template(
        "new_invoice",
        "subject",
        "Your invoice {{ invoice.number }} is ready\n",
        tenant="acme",
        updated_by="test",
    )
    await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant="acme")
    await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant="beta")
    assert _subjects(smtpd) == [
        "Your invoice INV-1042 is ready",
        "Invoice INV-1042 from Beta Tools",
    ]
    preview = await services.previews.build(
        "new_invoice", invoice="INV-1042", tenant="acme", sample=False
    )
    assert b"Subject: Your invoice INV-1042 is ready" in preview.data

    # Reset: the next pass uses the built-in subject again.
    assert services.desk.reset_template("new_invoice", tenant="acme") == 1
    await services.sending.send_invoice("INV-1042", kind="invoice_reminder", tenant="acme")
    assert _subjects(smtpd)[-1].startswith("Reminder: invoice INV-1042 is due on")


async def test_a_refused_template_is_not_stored(two_tenants: Services) -> None:
    services = two_tenants
    with pytest.raises(TemplateError, match=r"^line 2: access to '__class__'"):
        services.desk.save_template(
            "new_invoice", "text", "Hi\n{{ ''.__class__ }}", tenant="acme", updated_by="t"
        )
    services.desk.save_template(
        "new_invoice", "text", "v1 {{ invoice.number }}", tenant="acme", updated_by="a"
    )
    services.desk.save_template(
        "new_invoice", "text", "v2 {{ invoice.number }}", tenant="acme", updated_by="b"
    )
    with pytest.raises(TemplateError):
        services.desk.save_template(
            "new_invoice", "text", "v3 {{ invoice.number", tenant="acme", updated_by="c"
        )
    with Session(services.engine) as session:
        rows = session.exec(select(TemplateOverride)).all()
    assert [(r.part, r.source, r.updated_by) for r in rows] == [
        ("text", "v2 {{ invoice.number }}", "b")
    ]
    assert services.desk.template_overrides("new_invoice", tenant="beta") == {}


# -- the command line --------------------------------------------------------------------------


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[Sink]:
    server = start_sink(tmp_path)
    yield server
    server.stop()


def test_template_commands_round_trip(tmp_path: Path, db_url: str, sink: Sink) -> None:
    config = write_config(tmp_path, db_url, sink.port)
    doc = tmp_path / "doc.json"
    doc.write_text(json.dumps(DEMO_DOC))
    assert dunmail(config, "import", str(doc), "--at", AT).returncode == 0

    bad = tmp_path / "bad.html"
    bad.write_text(LAYOUT + "<p>ok</p>\n{{ invoice.number }\n{% endblock %}\n")
    refused = dunmail(config, "template", "set", "new_invoice", str(bad), "--part", "html")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "line 4: unexpected '}'" in refused.stderr
    assert "Traceback" not in refused.stderr

    good = tmp_path / "subject.txt"
    good.write_text("Invoice {{ invoice.number }}: please pay\n")
    saved = dunmail(config, "template", "set", "new_invoice", str(good), "--part", "subject")
    assert saved.returncode == 0, saved.stderr
    shown = dunmail(config, "template", "show", "new_invoice")
    assert shown.returncode == 0, shown.stderr
    assert "subject (override)" in shown.stdout and "please pay" in shown.stdout
    assert "html (built-in)" in shown.stdout and '{% extends "_layout.html" %}' in shown.stdout

    sent = dunmail(config, "send", "--invoice", "INV-1042", "--at", AT)
    assert sent.returncode == 0, sent.stderr
    assert len(set(sink.accepted())) == 1  # one Message-ID, one transaction per recipient

    reset = dunmail(config, "template", "reset", "new_invoice", "--part", "subject")
    assert reset.returncode == 0 and "1 override(s) removed" in reset.stdout
    shown = dunmail(config, "template", "show", "new_invoice")
    assert "subject (built-in)" in shown.stdout and "please pay" not in shown.stdout
