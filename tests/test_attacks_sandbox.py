"""The attack catalogue, sandbox family: Jinja sandbox escapes in tenant templates, and templates
that try to exhaust memory.

Part of the catalogue split by attack family (``tests/test_attacks_*.py``); every attack goes
through the real paths, on SQLite and PostgreSQL where a database is involved.
"""

from __future__ import annotations

import re

import pytest
from sqlmodel import Session, select

from dunmail.app import Services
from mailer.errors import TemplateError
from mailer.kinds import sample_context
from mailer.models import TemplateOverride
from mailer.overrides import validate_override
from mailer.render import Renderer
from mailer.transport import MemoryTransport
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
            services.save_template("new_invoice", "text", source, tenant="acme", updated_by="t")
    with Session(services.engine) as session:
        assert session.exec(select(TemplateOverride)).all() == []
    sent = await _sent(services, transport)
    assert not INTERNALS.search(sent.data.decode("ascii", "replace"))
