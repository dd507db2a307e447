"""DNS questions for ``dunmail domain check``, over dnspython: the one module that resolves.

A ``Lookup`` (mailer/outbound/dns_records.py) that asks the system's resolvers or one name
server directly, and turns every way DNS can fail (NXDOMAIN, SERVFAIL, silence) into an
``Answer`` with the problem in words, so the check reports a line where it would have raised.
"""

from __future__ import annotations

from ipaddress import ip_address

import dns.exception
import dns.resolver

from mailer.errors import ConfigError
from mailer.outbound.dns_records import Answer, Lookup


def parse_nameserver(value: str) -> tuple[str, int]:
    """``IP`` or ``IP:PORT`` (``[IPv6]:PORT``) of the server ``--nameserver`` names."""
    host, port = value, 53
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port_text = rest.removeprefix(":") or "53"
    elif value.count(":") == 1:
        host, _, port_text = value.partition(":")
    else:
        port_text = "53"
    try:
        ip_address(host)
        port = int(port_text)
    except ValueError:
        raise ConfigError(
            f"--nameserver {value!r}: not IP or IP:PORT (e.g. 127.0.0.1:5353)"
        ) from None
    if not 0 < port < 65536:
        raise ConfigError(f"--nameserver {value!r}: port must be 1-65535")
    return host, port


def dns_lookup(nameserver: str | None, *, timeout: float) -> Lookup:
    """A ``Lookup`` over dnspython: the system's resolvers, or the one ``nameserver`` asked
    directly (e.g. the zone's own authoritative server, before caches have the new records)."""
    try:
        resolver = dns.resolver.Resolver(configure=nameserver is None)
    except dns.resolver.NoResolverConfiguration:
        raise ConfigError("no DNS resolver configured here: pass --nameserver IP") from None
    if nameserver is not None:
        host, port = parse_nameserver(nameserver)
        resolver.nameservers = [host]
        resolver.port = port
    resolver.lifetime = timeout

    def lookup(name: str, rtype: str) -> Answer:
        try:
            answer = resolver.resolve(name, rtype, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return Answer(problem="NXDOMAIN (no such name)", nxdomain=True)
        except dns.resolver.NoNameservers:
            return Answer(problem="SERVFAIL (no name server answered)")
        except dns.exception.Timeout:
            return Answer(problem=f"no answer within {timeout:g} s")
        except dns.exception.DNSException as exc:
            return Answer(problem=f"DNS error ({type(exc).__name__})")
        if rtype == "TXT":
            values = tuple(b"".join(r.strings).decode("ascii", "replace") for r in answer)
        else:
            values = tuple(r.to_text() for r in answer)
        return Answer(values=values)

    return lookup
