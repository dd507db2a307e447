"""An authoritative DNS server on loopback (dnslib), serving a zone a test builds and edits.

``dunmail domain check`` and dkimpy's verifier ask it over real UDP, through dnspython, as
they would ask a zone's name server: the records are what ``dunmail domain add`` printed,
character-strings as it split them, so a TXT string over 255 bytes would not even pack.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import dns.resolver
import dnslib  # type: ignore[import-untyped]
from dnslib.server import (  # type: ignore[import-untyped]
    BaseResolver,
    DNSHandler,
    DNSLogger,
    DNSServer,
)

Key = tuple[str, str]  # (name without the trailing dot, lower case; "TXT" | "MX")


@dataclass
class Zone(BaseResolver):  # type: ignore[misc]
    """The records served: ``records[(name, type)]`` is a list of rdata (TXT: a list of
    character-strings; MX: ``"10 host."``). A name with no record of any type is NXDOMAIN;
    ``servfail`` names get SERVFAIL."""

    records: dict[Key, list[Any]] = field(default_factory=dict)
    servfail: set[str] = field(default_factory=set)

    def publish(self, printed: Iterable[Mapping[str, Any]]) -> None:
        """Add the records of ``dunmail domain add --json`` ("records")."""
        for record in printed:
            data = record["strings"] if record["type"] == "TXT" else record["value"]
            self.records.setdefault((record["name"].lower(), record["type"]), []).append(data)

    def resolve(self, request: dnslib.DNSRecord, handler: DNSHandler) -> dnslib.DNSRecord:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        rtype = dnslib.QTYPE[request.q.qtype]
        if name in self.servfail:
            reply.header.rcode = dnslib.RCODE.SERVFAIL
            return reply
        if not any(n == name for n, _ in self.records if self.records[(n, _)]):
            reply.header.rcode = dnslib.RCODE.NXDOMAIN
            return reply
        for data in self.records.get((name, rtype), []):
            if rtype == "TXT":
                rdata: Any = dnslib.TXT([s.encode("ascii") for s in data])
            else:
                preference, host = data.split()
                rdata = dnslib.MX(host, int(preference))
            reply.add_answer(dnslib.RR(name, getattr(dnslib.QTYPE, rtype), rdata=rdata, ttl=60))
        return reply


@contextmanager
def serve(zone: Zone) -> Iterator[str]:
    """Serve ``zone`` on a free UDP port of 127.0.0.1; yields ``"127.0.0.1:PORT"``."""
    quiet = DNSLogger(logf=lambda _line: None)
    server = DNSServer(zone, address="127.0.0.1", port=0, logger=quiet)
    server.start_thread()
    try:
        yield f"127.0.0.1:{server.server.server_address[1]}"
    finally:
        server.stop()
        server.server.server_close()


def dkim_dns(nameserver: str) -> Any:
    """dkimpy's ``dnsfunc``: the TXT record at ``name``, asked of ``nameserver`` by dnspython."""
    host, _, port = nameserver.partition(":")
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [host]
    resolver.port = int(port)
    resolver.lifetime = 3.0

    def txt(name: bytes, timeout: int = 5) -> bytes | None:
        try:
            answer = resolver.resolve(name.decode("ascii"), "TXT")
        except dns.exception.DNSException:
            return None
        return b"".join(next(iter(answer)).strings)

    return txt
