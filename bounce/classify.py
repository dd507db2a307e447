"""PURE: one recipient's failure -> Sisimai's reason, and hard or soft, read in layers.

Three tables say what a failure means, each general and each row with its source:
``bounce.status_codes`` (RFC 3463 enhanced status codes and vendor subcodes),
``bounce.reply_codes`` (RFC 5321 reply codes) and ``bounce.phrases`` (wording families per
reason). ``PRECEDENCE`` below is the one place that says which layer speaks first and which wins
when they disagree; the README carries the same table. A ``Rules`` object holds the three tables,
so a caller (the corpus cross-validation) can classify with some rows switched off.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from bounce.detectors.phrase import NeedleIndex, needles_of
from bounce.phrases import PHRASES, PhraseRow
from bounce.reply_codes import REPLY_ROWS, ReplyRow
from bounce.status_codes import STATUS_ROWS, StatusRow

# (step, what it decides, source). Read top to bottom; the first step that decides, wins.
PRECEDENCE: tuple[tuple[str, str, str], ...] = (
    ("delivered", "Action: delivered is never a failure", "rfc3464"),
    ("vendor-code", "a provider's documented error code in the text (Spectrum AUP#...)", "vendor"),
    ("status-decisive", "a status code with one meaning (X.2.2, X.3.4, X.7.23-27...)", "rfc3463"),
    (
        "stage-mail",
        "refused at MAIL FROM with no wording, bare wording or wording about a "
        "recipient: the sender was refused (rejected)",
        "sisimai:Rejected",
    ),
    (
        "stage-greeting",
        "refused at connection/EHLO with no wording, bare wording or wording "
        "about a recipient: the sending host was refused (blocked)",
        "sisimai:Blocked",
    ),
    (
        "unknown-not-judged",
        "'user unknown' wording is userunknown only where an address status "
        "(X.1.1, X.1.3, 5.1.10) or the RCPT command backs it; said at DATA, beside a mailbox "
        "status (X.2.X) or with nothing to back it, it is a filter speaking (filtered)",
        "sisimai:UserUnknown, sisimai:Filtered",
    ),
    (
        "status-strong",
        "an address or host status (X.1.1, X.1.2, X.4.4, vendor subcodes) wins over "
        "wording, except wording naming a more specific reason (rate limit, relaying, blocking, a "
        "full mailbox, a move, the sender...)",
        "sisimai:UserUnknown",
    ),
    (
        "bare-vs-code",
        "a bare refusal word ('Rejected', 'Access denied') says less than a specific "
        "X.7.X code (other than X.7.0/X.7.1)",
        "rfc3463",
    ),
    (
        "dns-temporary",
        "host-unknown wording under a 4.X.X status is a DNS failure expected to pass "
        "(networkerror)",
        "sisimai:HostUnknown",
    ),
    ("phrase", "the first wording family that matches", "bounce.phrases"),
    ("status-weak", "any other status code in the table", "rfc3463"),
    (
        "reply-code",
        "a reply code with one RFC meaning (521/556 notaccept, 525 suspend, 552 "
        "mailboxfull, 5.0x syntaxerror...)",
        "rfc5321",
    ),
    (
        "queue-gave-up",
        "Action: delayed/expired, or failed with a 4.X.X status: retries ran out (expired)",
        "rfc3464",
    ),
    (
        "no-evidence",
        "wording nobody recognises: onhold; nothing at all: undefined",
        "sisimai:OnHold",
    ),
)

# Reasons about one recipient, which cannot be the answer before a recipient was named.
_RECIPIENT_REASONS = frozenset(
    {"userunknown", "hostunknown", "filtered", "mailboxfull", "suspend", "hasmoved", "notaccept"}
)
_GREETING = frozenset({"CONNECT", "EHLO", "HELO"})
# The plain "no such recipient" answers that a content filter also gives in a recipient's name
# (Sisimai Filtered: "user not found", "user reject"; UserUnknown's plainest wordings).
_FILTER_SAYS_UNKNOWN = re.compile(
    r"\b(?:user unknown|unknown user|no such user|recipient not found|user not found)\b"
    r"|email account that you tried to reach does not exist",
    re.IGNORECASE,
)
_KDDI_DOMAINS = ("ezweb.ne.jp", "au.com")
_NAMED_UNKNOWN = re.compile(r">: user unknown", re.IGNORECASE)
# Reasons that mean the address itself is bad, so mail to it should stop (Sisimai's hardbounce).
HARD_REASONS = frozenset({"userunknown", "hostunknown", "hasmoved"})
# A server's answer is a few reply lines; a megabyte "diagnostic" is a broken or hostile
# notice, and scanning all of it with every pattern took seconds.
_MAX_DIAGNOSTIC = 10_000
_CONTINUATION = re.compile(r"(?<=\S)\s+[245]\d\d[ -](?:[245]\.\d{1,3}\.\d{1,3}\s)?")
# Spectrum (Charter) "AUP#In-1310" codes, from its published table of e-mail error codes
# (spectrum.net, "understanding email error codes").
_SPECTRUM_AUP = re.compile(r"AUP#[-A-Za-z]*(\d{4})")
_SPECTRUM_CODES: list[tuple[int, int, str]] = [
    (1000, 1000, "blocked"),
    (1010, 1080, "rejected"),
    (1090, 1090, "systemerror"),
    (1100, 1150, "requireptr"),
    (1160, 1190, "policyviolation"),
    (1200, 1250, "blocked"),
    (1260, 1260, "networkerror"),
    (1300, 1340, "toomanyconn"),
    (1350, 1490, "speeding"),
    (1500, 1520, "rejected"),
    (1530, 1530, "mesgtoobig"),
    (1540, 1550, "speeding"),
    (1560, 1560, "policyviolation"),
    (1580, 1580, "speeding"),
]


@dataclass(frozen=True)
class Verdict:
    """A reason and the ids of the rows and steps that decided it (for cross-validation)."""

    reason: str
    rules: tuple[str, ...]


@dataclass(frozen=True)
class _Compiled:
    row: PhraseRow
    lowered: re.Pattern[str]  # for lower-cased ASCII text
    needles: tuple[str, ...]


class Rules:
    """The three layers' tables, compiled; ``without`` switches rows off by id."""

    def __init__(
        self,
        phrases: Iterable[PhraseRow] = PHRASES,
        statuses: Iterable[StatusRow] = STATUS_ROWS,
        replies: Iterable[ReplyRow] = REPLY_ROWS,
    ) -> None:
        self.phrases = tuple(phrases)
        self.statuses = tuple(statuses)
        self.replies = tuple(replies)
        self._compiled = tuple(_compile(row) for row in self.phrases)
        # (search, row) in table order: the scan below is the hot loop of parse(). A row is
        # searched only where the text holds one of its needles (or it has none).
        self._scan = tuple((c.lowered.search, c.row) for c in self._compiled)
        self._ungated = frozenset(i for i, c in enumerate(self._compiled) if not c.needles)
        keys: dict[str, set[int]] = {}
        for index, compiled in enumerate(self._compiled):
            for needle in compiled.needles:
                keys.setdefault(needle, set()).add(index)
        self._index = NeedleIndex({needle: frozenset(rows) for needle, rows in keys.items()})
        self._among: dict[frozenset[str], frozenset[int]] = {}
        self._status = {row.code: row for row in self.statuses}
        self._reply: dict[int, list[ReplyRow]] = {}
        for reply in self.replies:
            self._reply.setdefault(reply.code, []).append(reply)

    def sources(self) -> dict[str, str]:
        """Every row's id and source."""
        rows: list[PhraseRow | StatusRow | ReplyRow] = [*self.phrases, *self.statuses]
        return {row.id: row.source for row in [*rows, *self.replies]}

    def without(self, ids: Iterable[str]) -> Rules:
        """The same tables less the rows named."""
        off = frozenset(ids)
        return Rules(
            (r for r in self.phrases if r.id not in off),
            (r for r in self.statuses if r.id not in off),
            (r for r in self.replies if r.id not in off),
        )

    def status(self, status: str | None) -> StatusRow | None:
        """The row for a full code, else for its subject.detail."""
        if not status:
            return None
        return self._status.get(status) or self._status.get(status.split(".", 1)[1])

    def reply(self, code: int | None, command: str | None) -> ReplyRow | None:
        """The row for a reply code answered to ``command``."""
        for row in self._reply.get(code or 0, ()):
            if row.commands is None or command in row.commands:
                return row
        return None

    def phrase(self, text: str, among: frozenset[str] | None = None) -> PhraseRow | None:
        """The first phrase row matching ``text`` (continuation prefixes dropped), or None.

        ``among`` limits the scan to rows naming those reasons, bare refusals left out: all a
        strong status code needs to know is whether the wording names a reason it yields to.
        """
        # Lower-cased text against lower-case patterns: what IGNORECASE finds, but for the
        # few non-ASCII letters (long s, dotted I) that fold onto ASCII ones, which no mail
        # system's English wording uses; it keeps the needle gate for every text.
        text = text.lower()
        live = self._index.ids(text) | self._ungated  # a row without its needle cannot match
        if among is not None:
            allowed = self._among.get(among)
            if allowed is None:
                allowed = self._among[among] = frozenset(
                    i
                    for i, (_, row) in enumerate(self._scan)
                    if row.reason in among and not row.bare
                )
            live &= allowed
        for index in sorted(live):
            search, row = self._scan[index]
            if search(text):
                return row
        return None


def _compile(row: PhraseRow) -> _Compiled:
    lowered, needles = _lowered(row.pattern)
    return _Compiled(row, lowered, needles)


def _lowered(pattern: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    """``pattern`` for lower-cased ASCII text, and the needles that gate it.

    IGNORECASE turns off the regex engine's literal-prefix scan, so the pattern is tried at every
    position. On ASCII text, lower-casing the text and matching case-sensitively finds exactly
    what IGNORECASE finds (Unicode case folding differs only beyond ASCII). A pattern naming an
    upper-case letter keeps IGNORECASE and goes ungated.
    """
    if any(c.isupper() for c in re.sub(r"\\.", "", pattern)):  # escapes (\S, \W) aren't letters
        return re.compile(pattern, re.IGNORECASE), ()
    return re.compile(pattern), needles_of(pattern)


RULES = Rules()


def classify_reason(
    status: str | None,
    diagnostic: str,
    *,
    action: str | None = None,
    command: str | None = None,
    domain: str = "",
    reply_code: int | None = None,
    rules: Rules = RULES,
) -> str:
    """Sisimai's reason for one recipient's failure (see ``PRECEDENCE``).

    ``command`` is the SMTP command the remote server was answering, where the report says;
    ``domain`` is the recipient's domain; ``reply_code`` the RFC 5321 reply code.
    """
    return classify_verdict(
        status,
        diagnostic,
        action=action,
        command=command,
        domain=domain,
        reply_code=reply_code,
        rules=rules,
    ).reason


def classify_verdict(
    status: str | None,
    diagnostic: str,
    *,
    action: str | None = None,
    command: str | None = None,
    domain: str = "",
    reply_code: int | None = None,
    rules: Rules = RULES,
) -> Verdict:
    """The reason and the rules that decided it, following ``PRECEDENCE`` step by step."""
    if action == "delivered":
        return Verdict("delivered", ("step:delivered",))
    # "550-5.7.1 first line 550-5.7.1 second line": drop the repeated prefixes so that
    # phrases broken across reply lines (RFC 5321 s4.2.1) still match.
    text = _plain(diagnostic)
    vendor = _vendor_reason(text)
    if vendor:
        return Verdict(vendor, ("step:vendor-code",))
    code = rules.status(status)
    if code and code.strength == "decisive":
        return Verdict(code.reason, (code.id,))
    # A strong code only needs to know whether the wording names a reason it yields to.
    row = rules.phrase(text, code.yields_to if code and code.strength == "strong" else None)
    said = row.reason if row else None
    bare = row is not None and row.bare
    used = (row.id,) if row else ()
    about_recipient = said is None or bare or said in _RECIPIENT_REASONS
    if command == "MAIL" and about_recipient:
        return Verdict("rejected", ("step:stage-mail", *used))
    if command in _GREETING and (about_recipient or said == "rejected"):
        return Verdict("blocked", ("step:stage-greeting", *used))
    if said == "userunknown" and command != "RCPT" and _FILTER_SAYS_UNKNOWN.search(text):
        judged = code is not None and code.reason == "userunknown" and code.strength == "strong"
        if not judged and (command == "DATA" or not _names_the_address(text, domain)):
            return Verdict("filtered", ("step:unknown-not-judged", *used))
    if code and code.strength == "strong" and (bare or said not in code.yields_to):
        return Verdict(code.reason, (code.id, *used))
    if bare and code and code.code.startswith("7.") and code.code not in ("7.0", "7.1"):
        return Verdict(code.reason, ("step:bare-vs-code", code.id, *used))
    if said == "hostunknown" and status and status.startswith("4."):
        return Verdict("networkerror", ("step:dns-temporary", *used))
    if said:
        return Verdict(said, used)
    if code:
        return Verdict(code.reason, (code.id,))
    reply = rules.reply(reply_code, command)
    if reply:
        return Verdict(reply.reason, (reply.id,))
    if action in ("delayed", "expired"):
        return Verdict("expired", ("step:queue-gave-up",))
    return Verdict("onhold" if text.strip() else "undefined", ("step:no-evidence",))


def _names_the_address(text: str, domain: str) -> bool:
    """Whether a "user unknown" answer names the address it judged (``<a@b>: User unknown``).

    au by KDDI (Sisimai's Rhost::KDDI) answers "550 : User unknown", the address left out,
    when its filter refuses the sender in the recipient's name, and names the address when the
    address itself is unknown. Elsewhere the plain wording proves nothing by itself.
    """
    return domain.lower().endswith(_KDDI_DOMAINS) and _NAMED_UNKNOWN.search(text) is not None


def _plain(diagnostic: str) -> str:
    """The words of a reply, as the phrase rows are written: continuation prefixes dropped
    and every run of white space (folding, tabs, padding) one space."""
    return " ".join(_CONTINUATION.sub(" ", diagnostic[:_MAX_DIAGNOSTIC]).split())


def phrase_reason(text: str) -> str | None:
    """What the diagnostic's wording alone says (the phrase layer), or None."""
    row = RULES.phrase(_plain(text))
    return row.reason if row else None


def _vendor_reason(text: str) -> str | None:
    """A provider's own documented error code, which names the reason outright."""
    found = _SPECTRUM_AUP.search(text) if "AUP#" in text else None
    if found:
        code = int(found.group(1))
        return next((r for low, high, r in _SPECTRUM_CODES if low <= code <= high), None)
    return None


def classify_hard(reason: str, status: str | None) -> bool:
    """Whether the address itself is bad (suppress it), as opposed to a passing problem."""
    if reason in HARD_REASONS:
        return True
    return reason == "notaccept" and not (status and status.startswith("4."))
