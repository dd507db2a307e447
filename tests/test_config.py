"""Configuration: typed, strict, environment-overridable, and safe about secrets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dunmail.config import DEV_SECRET, Config, load_config
from mailer.content.kinds import KINDS
from mailer.errors import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


BASE = """
env = "dev"
[relay]
host = "127.0.0.1"
port = 2525
[tenants.acme]
name = "Acme"
email = "ar@acme.example"
"""


def test_embedded_defaults_load_without_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no config.toml here
    config = load_config(None)
    assert config.env == "dev" and config.capture.enabled and config.demo.seed
    assert config.database.url == "sqlite:///var/dunmail.db"
    assert set(config.tenants) == {"acme"}


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUNMAIL_RELAY__PORT", "2626")
    monkeypatch.setenv("DUNMAIL_TENANTS__ACME__NAME", "Acme From Env")
    config = load_config(_write(tmp_path, BASE))
    assert config.relay.port == 2626
    assert config.relay.host == "127.0.0.1"  # the rest of the table is kept
    assert config.tenants["acme"].name == "Acme From Env"


@pytest.mark.parametrize(
    "text,where",
    [
        (BASE.replace("port = 2525", "prot = 2525"), "relay.prot"),
        (BASE.replace("port = 2525", "port = 99999"), "relay.port"),
        (BASE + 'delivery = "carrier-pigeon"\n', "tenants.acme.delivery"),
        (BASE + 'time_zone = "Mars/Olympus"\n', "tenants.acme.time_zone"),
        (BASE + 'delivery = "smtp"\n', "tenants.acme"),
        (BASE.replace("[tenants.acme]", "[tenants.Bad_Slug]"), "Bad_Slug"),
        (
            BASE + "[tenants.acme.dkim]\ndomain = 'a.example'\nselector = 'bad selector'\n"
            "key_file = 'k'\n",
            "selector",
        ),
    ],
)
def test_mistakes_are_named(tmp_path: Path, text: str, where: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, text))
    assert where in str(caught.value)


def test_not_toml_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "[relay\nport = 1"))
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "missing.toml")


def test_production_requires_a_real_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    production = BASE.replace('env = "dev"', 'env = "production"')
    monkeypatch.delenv("DUNMAIL_SECRET_KEY", raising=False)
    with pytest.raises(ConfigError, match="DUNMAIL_SECRET_KEY"):
        load_config(_write(tmp_path, production))
    monkeypatch.setenv("DUNMAIL_SECRET_KEY", DEV_SECRET)
    with pytest.raises(ConfigError, match="development secret"):
        load_config(_write(tmp_path, production)).secret_key()
    monkeypatch.setenv("DUNMAIL_SECRET_KEY", "s3cr3t-" * 5)
    assert load_config(_write(tmp_path, production)).secret_key() == b"s3cr3t-" * 5


def test_passwords_are_read_from_the_environment_only(monkeypatch: pytest.MonkeyPatch) -> None:
    config = Config(
        env="dev",
        tenants={
            "acme": {
                "name": "Acme",
                "email": "ar@acme.example",
                "delivery": "smtp",
                "smtp": {
                    "host": "smtp.acme.example",
                    "username": "u",
                    "password_env": "ACME_PW",
                    "tls": "starttls",
                },
            }
        },
    )
    smtp = config.tenants["acme"].smtp
    assert smtp is not None
    monkeypatch.delenv("ACME_PW", raising=False)
    with pytest.raises(ConfigError, match="ACME_PW"):
        smtp.password()
    monkeypatch.setenv("ACME_PW", "hunter2")
    assert smtp.password() == "hunter2"
    assert "hunter2" not in repr(config)


def test_credentials_never_travel_in_clear_text_unless_asked() -> None:
    from mailer.config import SMTPEndpoint

    with pytest.raises(ValueError, match="clear text"):
        SMTPEndpoint(host="smtp.acme.example", username="u", password_env="PW")
    SMTPEndpoint(host="smtp.acme.example", username="u", tls="starttls")
    SMTPEndpoint(host="127.0.0.1", username="u")  # loopback
    SMTPEndpoint(host="smtp.acme.example", username="u", allow_plaintext_auth=True)


BRANDING = """
[tenants.acme.branding]
logo_url = "https://acme.example/logo.png"
brand_color = "#0b5cad"
address = ["Acme Ltd", "1 Example Street"]
footer = "VAT GB123"
"""


def test_branding_and_email_kinds_have_defaults(tmp_path: Path) -> None:
    tenant = load_config(_write(tmp_path, BASE)).tenants["acme"]
    assert tenant.branding.as_context() == {
        "logo_url": None,
        "brand_color": None,
        "address": [],
        "footer": None,
        "tax_id": None,
    }
    assert set(tenant.emails) == set(KINDS)
    for name, spec in KINDS.items():
        assert tenant.sends(name) is spec.default_on
        assert tenant.attaches_pdf(name) is (spec.pdf is not None)


def test_branding_and_email_kinds_are_read(tmp_path: Path) -> None:
    text = BASE + BRANDING + "[tenants.acme.emails.thank_you]\nenabled = true\nattach_pdf = false\n"
    text += "[tenants.acme.emails.statement]\nenabled = false\n"
    tenant = load_config(_write(tmp_path, text)).tenants["acme"]
    assert tenant.branding.logo_url == "https://acme.example/logo.png"
    assert tenant.branding.as_context()["address"] == ["Acme Ltd", "1 Example Street"]
    assert tenant.sends("thank_you") and not tenant.attaches_pdf("thank_you")
    assert not tenant.sends("statement") and tenant.attaches_pdf("statement")
    assert tenant.sends("new_invoice") and tenant.attaches_pdf("new_invoice")


@pytest.mark.parametrize(
    "extra,message",
    [
        ("[tenants.acme.emails.invoice_remind]\nenabled = true\n", "'invoice_remind'"),
        ("[tenants.acme.emails.payment_plan]\nattach_pdf = true\n", "payment_plan.attach_pdf"),
        ("[tenants.acme.emails.new_invoice]\nenabeld = true\n", "new_invoice.enabeld"),
        (BRANDING.replace("https://acme", "javascript://acme"), "branding.logo_url"),
        (BRANDING.replace("#0b5cad", "blue; x: y"), "branding.brand_color"),
        (BRANDING.replace("footer", "fotter"), "branding.fotter"),
    ],
)
def test_branding_and_email_mistakes_are_named(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, BASE + extra))
    assert message in str(caught.value)


def test_the_commented_branding_and_emails_examples_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Uncommented, the example's [tenants.acme.branding] and .emails tables are valid."""
    example = (Path(__file__).parent.parent / "config.example.toml").read_text()
    start = example.index("# [tenants.acme.branding]")
    settings = re.compile(r"# (\[|[a-z_]+ = )")  # "# [table]" and "# key = value", not prose
    lines = [line[2:] for line in example[start:].splitlines() if settings.match(line)]
    uncommented = example[:start] + "\n".join(lines) + "\n"
    monkeypatch.setenv("DUNMAIL_SECRET_KEY", "x" * 32)
    tenant = load_config(_write(tmp_path, uncommented)).tenants["acme"]
    assert tenant.branding.brand_color == "#0b5cad" and len(tenant.branding.address) == 3
    assert tenant.sends("thank_you") and not tenant.attaches_pdf("thank_you")
    assert not tenant.sends("statement")


IMAP = """
[tenants.acme.imap]
host = "imap.acme.example"
username = "bounces@acme.example"
password_env = "ACME_IMAP_PASSWORD"
"""


def test_imap_mailbox_defaults_and_ports(tmp_path: Path) -> None:
    imap = load_config(_write(tmp_path, BASE + IMAP)).tenants["acme"].imap
    assert imap is not None
    assert (imap.tls.value, imap.server_port, imap.mailbox, imap.after.value) == (
        "implicit",
        993,
        "INBOX",
        "flag",
    )
    assert imap.verify_certificate and imap.poll_seconds == 60
    starttls = load_config(_write(tmp_path, BASE + IMAP + 'tls = "starttls"\n'))
    assert starttls.tenants["acme"].imap is not None
    assert starttls.tenants["acme"].imap.server_port == 143
    assert load_config(_write(tmp_path, BASE)).tenants["acme"].imap is None


@pytest.mark.parametrize(
    "extra,message",
    [
        ('tls = "none"\n', "tenants.acme.imap: Value error, imap.tls = 'none' for imap.acme"),
        ('pasword_env = "X"\n', "tenants.acme.imap.pasword_env"),
        ('after = "archive"\n', "tenants.acme.imap.after"),
        ('mailbox = "Boîte"\n', "tenants.acme.imap.mailbox"),
        ("poll_seconds = 0\n", "tenants.acme.imap.poll_seconds"),
    ],
)
def test_imap_mistakes_are_named(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, BASE + IMAP + extra))
    assert message in str(caught.value)


def test_imap_password_never_travels_in_clear_text_unless_asked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="clear text.*allow_plaintext_auth"):
        load_config(_write(tmp_path, BASE + IMAP + 'tls = "none"\n'))
    loopback = IMAP.replace("imap.acme.example", "127.0.0.1") + 'tls = "none"\n'
    assert load_config(_write(tmp_path, BASE + loopback)).tenants["acme"].imap is not None
    opted_in = IMAP + 'tls = "none"\nallow_plaintext_auth = true\n'
    assert load_config(_write(tmp_path, BASE + opted_in)).tenants["acme"].imap is not None


def test_imap_password_is_read_from_the_environment_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(_write(tmp_path, BASE + IMAP))
    imap = config.tenants["acme"].imap
    assert imap is not None
    monkeypatch.delenv("ACME_IMAP_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match="imap.password_env names \\$ACME_IMAP_PASSWORD"):
        imap.password()
    monkeypatch.setenv("ACME_IMAP_PASSWORD", "hunter2")
    assert imap.password() == "hunter2"
    assert "hunter2" not in repr(config)


def _uncomment_block(example: str, header: str) -> str:
    """The commented ``header`` table of the example, uncommented (settings only, no prose)."""
    block = example[example.index(header) :].split("\n\n", 1)[0]
    settings = re.compile(r"# (\[|[a-z_]+ = )")
    return "\n".join(line[2:] for line in block.splitlines() if settings.match(line)) + "\n"


def test_the_example_inbound_and_commented_imap_tables_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The example's [inbound] table and, uncommented, its [tenants.acme.imap] are valid."""
    example = (Path(__file__).parent.parent / "config.example.toml").read_text()
    imap_block = _uncomment_block(example, "# [tenants.acme.imap]")
    monkeypatch.setenv("DUNMAIL_SECRET_KEY", "x" * 32)
    imap = load_config(_write(tmp_path, example + imap_block)).tenants["acme"].imap
    assert imap is not None and imap.password_env == "ACME_IMAP_PASSWORD"
    inbound = load_config(_write(tmp_path, example)).inbound
    assert (inbound.enabled, inbound.port, inbound.max_message_bytes) == (
        False,
        2526,
        25 * 1024 * 1024,
    )
