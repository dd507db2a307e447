"""PURE: the status-code layer's table: RFC 3463 enhanced status codes and vendor subcodes.

Each row maps a code to a Sisimai reason, names its source, and says how far the code is
trusted against the wording around it (``strength``):

- ``decisive``: the code has one meaning that no wording changes (X.2.2 mailbox full, X.7.26
  authentication checks failed).
- ``strong``: the code wins unless the wording names one of the reasons in ``yields_to`` (Sisimai
  UserUnknown: an X.1.1 whose diagnostic speaks of relaying, blocking, a full mailbox, a move,
  the sender or a rate limit is about that, not about the address).
- ``weak``: the wording is read first; the code decides only when the wording says nothing
  (many servers answer 5.7.1 or 5.0.0 for anything).

A full code (``5.4.312``) is looked up before its subject.detail (``4.312`` does not exist in
RFC 3463; vendors use such details for their own meanings).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StatusRow:
    """One enhanced status code (``"1.1"`` for any class, or a full ``"5.4.312"``)."""

    code: str
    reason: str
    strength: str  # decisive | strong | weak
    source: str
    yields_to: frozenset[str] = frozenset()

    @property
    def id(self) -> str:
        return f"status:{self.code}"


# Wordings more specific than "this address is bad" (Sisimai UserUnknown's exclusions, plus the
# rate limits the holdout showed under a 5.1.1).
_ADDRESS_YIELDS = frozenset(
    {
        "mailboxfull",
        "mesgtoobig",
        "exceedlimit",
        "suspend",
        "hasmoved",
        "norelaying",
        "authfailure",
        "blocked",
        "rejected",
        "notaccept",
        "toomanyconn",
        "speeding",
        "hostunknown",
        "requireptr",
        "spamdetected",
        "policyviolation",
        "virusdetected",
        "systemerror",
        "mailererror",
        "expired",
        "networkerror",
    }
)
_HOST_YIELDS = frozenset({"networkerror", "notaccept", "blocked", "rejected", "norelaying"})

R = "rfc3463"
STATUS_ROWS: tuple[StatusRow, ...] = (
    # X.1.X addressing status
    StatusRow("1.0", "userunknown", "weak", "sisimai:UserUnknown"),
    StatusRow("1.1", "userunknown", "strong", R, _ADDRESS_YIELDS),  # bad destination mailbox
    StatusRow("1.2", "hostunknown", "strong", R, _HOST_YIELDS),  # bad destination system
    StatusRow("1.3", "userunknown", "strong", R, _ADDRESS_YIELDS),  # bad address syntax
    StatusRow("1.4", "filtered", "weak", "sisimai:Filtered"),  # address ambiguous
    StatusRow("1.6", "hasmoved", "decisive", R),  # mailbox has moved
    StatusRow("1.7", "rejected", "strong", R, frozenset({"blocked"})),  # bad sender address
    StatusRow("1.8", "rejected", "strong", R, frozenset({"blocked"})),  # bad sender system
    StatusRow("1.9", "systemerror", "weak", R),
    # RFC 7505 says null MX; Microsoft answers 5.1.10 for "recipient not found" too.
    StatusRow("1.10", "notaccept", "weak", "rfc7505"),
    StatusRow(
        "5.1.10",
        "userunknown",
        "strong",
        "vendor:Microsoft, Exchange Online NDR 5.1.10",
        _ADDRESS_YIELDS,
    ),
    # X.2.X mailbox status
    StatusRow("2.0", "filtered", "weak", "sisimai:Filtered"),
    StatusRow("2.1", "filtered", "weak", "sisimai:Filtered"),  # mailbox disabled
    StatusRow("4.2.1", "blocked", "weak", "sisimai:Blocked"),
    StatusRow("2.2", "mailboxfull", "decisive", R),
    StatusRow("2.3", "exceedlimit", "decisive", R),
    StatusRow("2.4", "filtered", "weak", R),  # mailing list expansion problem
    # X.3.X mail system status
    StatusRow("3.0", "systemerror", "weak", R),
    StatusRow("3.1", "systemfull", "weak", R),
    StatusRow("3.2", "notaccept", "weak", R),
    StatusRow("3.3", "systemerror", "weak", R),
    StatusRow("3.4", "mesgtoobig", "decisive", R),
    StatusRow("3.5", "systemerror", "weak", R),
    # X.4.X network and routing status
    StatusRow("4.0", "networkerror", "weak", R),
    StatusRow("4.1", "expired", "weak", "sisimai:Expired"),  # no answer from host
    StatusRow("4.2", "networkerror", "weak", R),  # bad connection
    StatusRow("4.3", "systemerror", "weak", R),  # directory server failure
    StatusRow("4.4", "hostunknown", "strong", "sisimai:HostUnknown", _HOST_YIELDS),
    StatusRow("4.4.4", "networkerror", "weak", R),  # unable to route, for now
    StatusRow("4.5", "systemfull", "weak", "sisimai:SystemFull"),  # congestion
    StatusRow("4.6", "networkerror", "weak", R),  # routing loop
    StatusRow("4.7", "expired", "weak", R),  # delivery time expired
    StatusRow("5.4.300", "expired", "weak", "vendor:Microsoft, NDR 5.4.300 message expired"),
    StatusRow("5.4.310", "hostunknown", "strong", "vendor:Microsoft, NDR 5.4.310", _HOST_YIELDS),
    StatusRow("5.4.312", "networkerror", "decisive", "vendor:Microsoft, NDR 5.4.312 DNS query"),
    StatusRow("5.4.316", "expired", "decisive", "vendor:Microsoft, NDR 5.4.316 conn. refused"),
    StatusRow("5.4.14", "networkerror", "weak", "vendor:Microsoft, NDR 5.4.14 hop count"),
    # X.5.X protocol status
    StatusRow("5.0", "syntaxerror", "weak", R),
    StatusRow("5.1", "syntaxerror", "weak", R),
    StatusRow("5.2", "syntaxerror", "weak", R),
    StatusRow("5.3", "toomanyconn", "strong", R, frozenset({"speeding"})),  # too many rcpts
    StatusRow("5.4", "syntaxerror", "weak", R),
    StatusRow("5.5", "syntaxerror", "weak", R),
    StatusRow("5.6", "syntaxerror", "weak", "rfc4954"),
    # X.6.X content status (Sisimai: any X.6.X is contenterror)
    *(StatusRow(f"6.{n}", "contenterror", "weak", R) for n in range(11)),
    # X.7.X security or policy status
    StatusRow("7.0", "securityerror", "weak", R),
    StatusRow("7.1", "securityerror", "weak", R),  # delivery not authorized
    StatusRow("4.7.1", "blocked", "weak", "sisimai:Blocked"),
    StatusRow("7.2", "norelaying", "weak", R),  # list expansion prohibited
    *(StatusRow(f"7.{n}", "securityerror", "weak", R) for n in (3, 4, 5, 6, 7, 8, 9, 10, 11)),
    StatusRow("7.12", "securityerror", "weak", "rfc4954"),
    StatusRow("7.13", "suspend", "decisive", "rfc5248"),  # user account disabled
    StatusRow("7.14", "securityerror", "weak", "rfc5248"),
    StatusRow("7.15", "securityerror", "weak", "rfc6710"),
    StatusRow("7.16", "mesgtoobig", "decisive", "rfc6710"),
    StatusRow("7.17", "hasmoved", "decisive", "rfc6710"),  # mailbox owner has changed
    StatusRow("7.18", "hasmoved", "decisive", "rfc7293"),  # domain owner has changed
    StatusRow("7.19", "securityerror", "weak", "rfc7293"),
    *(StatusRow(f"7.{n}", "authfailure", "decisive", "rfc7372") for n in (20, 21, 22, 23, 24)),
    StatusRow("7.25", "requireptr", "decisive", "rfc7372"),
    StatusRow("7.26", "authfailure", "decisive", "rfc7372; vendor:Google, Gmail 5.7.26"),
    StatusRow("7.27", "notaccept", "decisive", "rfc7505"),
    StatusRow(
        "7.28",
        "spamdetected",
        "decisive",
        "vendor:IANA SMTP enhanced status code registry, X.7.28 mail flood",
    ),
    StatusRow("7.29", "authfailure", "decisive", "rfc8617"),  # ARC validation failed
    StatusRow("7.30", "failedstarttls", "decisive", "rfc8689"),  # REQUIRETLS required
    # Microsoft's X.7.6xx "banned sending IP" family and its spam/abuse denials.
    *(
        StatusRow(f"5.7.{n}", "blocked", "strong", "vendor:Microsoft, NDR 5.7.606-649")
        for n in range(606, 650)
    ),
    StatusRow("5.7.511", "blocked", "strong", "vendor:Microsoft, NDR 5.7.511 banned sender"),
    StatusRow("5.7.708", "blocked", "strong", "vendor:Microsoft, NDR 5.7.708 IP reputation"),
    StatusRow("5.2.121", "toomanyconn", "strong", "vendor:Microsoft, NDR 5.2.121 hourly limit"),
    StatusRow("5.2.122", "toomanyconn", "strong", "vendor:Microsoft, NDR 5.2.122 hourly limit"),
    StatusRow("5.1.90", "toomanyconn", "strong", "vendor:Microsoft, NDR 5.1.90 daily limit"),
)
