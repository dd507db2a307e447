"""PURE: an enhanced status and a diagnostic text -> Sisimai's reason, and hard or soft.

A few status codes are decisive (5.1.1, 5.2.2, 5.7.26 ...). Otherwise the diagnostic text is
read first, because it is the remote server's own words, and the status code decides only when
the text matches nothing: many servers answer 5.7.1 or 5.0.0 for anything. The SMTP command a
reply answered (RFC 5321 s4.1) refines the reason: nothing about a recipient can be said at
MAIL FROM or at connection time, and a bare refusal word ("Rejected", "Access denied") says
less than the stage it was said at or a specific X.7.X security code. A provider's documented
error code (Spectrum's "AUP#In-1310") is read before any wording.
"""

from __future__ import annotations

import re

try:  # the stdlib's own regex parser (private, 3.11+): only to find needles, never to match
    from re import _constants, _parser  # type: ignore[attr-defined]
except ImportError:  # a later Python moved it: every pattern simply goes ungated
    _parser = None
from typing import Any

# Bare refusal words: they say that something was refused, not why or at which stage.
_REFUSAL_WORDS = r"blocked|block|denied|refused|not permitted|access denied|connection rejected"
_HOST_REFUSAL_WORDS = r"client host rejected|rejected due to|banned"
_REJECT_WORDS = r"reject|sender (?:address )?(?:rejected|denied|unknown|verify)|domain of sender"
_BARE_REFUSALS = frozenset(
    {_REFUSAL_WORDS, _HOST_REFUSAL_WORDS, _REJECT_WORDS, r"refused|not accepted"}
)

# Order matters: the first reason with a matching phrase wins, so the narrow ones come first.
# A reason may take several rows; each row is a regular expression of alternatives.
_PHRASES: list[tuple[str, str]] = [
    # Sisimai's "speeding" (Gmail's per-recipient receiving rate; Postfix's slow-down answer).
    ("speeding", r"receiving mail at a rate that prevents|please try again slower"),
    ("speeding", r"temporarily rate limited"),
    # Sisimai's "mailererror": a local delivery program (pipe, procmail) failed.
    ("mailererror", r"pipe to \|/|mailer error|command died with status|procmail: |\|\| exit "),
    ("expired", r"delivery failed \d+ attempts|still undelivered after"),
    ("systemerror", r"contact ldap server"),
    ("policyviolation", r"content presents a potential"),
    ("policyviolation", r"denied by policy|(?:message|email) not accepted for policy reasons"),
    ("spamdetected", r"\bofr_?506\b"),  # Orange / Wanadoo: "Mail rejete. OFR_506" (spam)
    ("rejected", r"sending to/from an address that has been blacklisted"),
    ("rejected", r"different address or alias using the|all recipient addresses rejected"),
    # Exchange Online's directory-based edge blocking: the recipient is not in the directory.
    ("userunknown", r"5\.4\.1 .{0,80}recipient address rejected: access denied"),
    ("hostunknown", r"the account or domain may not exist"),
    ("hostunknown", r"(?<![@\w.-])(?:[a-z0-9-]+\.)+[a-z]{2,} does not exist"),
    ("spamdetected", r"(?:scored|classified|detected|identified|considered|rejected) as spam"),
    ("spamdetected", r"spam classification"),
    ("systemfull", r"insufficient (?:disk|system) (?:space|storage)"),
    ("hostunknown", r"domain (?:name )?(?:does not exist|not found)"),
    ("networkerror", r"name service error|not found, try again|dns query failed"),
    ("networkerror", r"(?:establish|open) an smtp connection"),
    ("expired", r"message expired"),  # after those: Exchange's "expired, DNS query failed"
    ("rejected", r"(?:not have|no) permission to post"),
    ("rejected", r"not a member of this (?:mailing )?list"),  # a list refusing the sender
    ("rejected", r"sender (?:address )?(?:rejected|denied|unknown|verify|is not verified)"),
    ("rejected", r"domain of sender|sender was rejected|address is not verified"),
    ("rejected", r"mail from .* rejected"),
    ("notcompliantrfc", r"rfc ?5322|rfc ?2822|not (?:rfc )?compliant|multiple addresses in from"),
    ("notcompliantrfc", r"multiple \w+ headers|duplicate headers?"),
    ("policyviolation", r"header error|headers? (?:are|is) not accepted"),  # Sisimai's table
    ("suspend", r"temporar(?:y|ily) locked"),
    ("suspend", r"account (?:is |has been )?(?:locked|disabled|suspended)"),
    ("suspend", r"recipient account is blocked|compte du destinataire est bloque"),
    ("toomanyconn", r"too many (?:recipients|connections|concurrent|simultaneous)"),
    ("toomanyconn", r"connection (?:frequency|limit)"),
    ("virusdetected", r"virus|malware|infected"),
    ("mesgtoobig", r"message (?:is )?too (?:big|large)|size (?:limit|exceeds)"),
    ("mesgtoobig", r"exceeds? (?:the )?(?:maximum )?(?:message )?size|message size|too large"),
    ("mesgtoobig", r"message length exceeds"),
    ("requireptr", r"reverse (?:dns|lookup|dns lookup)|\bptr\b|no (?:ptr|rdns)|rdns"),
    ("requireptr", r"cannot find your hostname|resolve your (?:ip|address)"),
    ("requireptr", r"client host .* (?:name )?lookup|ip name lookup failed|mismatches client ip"),
    ("authfailure", r"\bspf\b|\bdkim\b|\bdmarc\b"),
    ("authfailure", r"not authorized to send|sender policy framework"),
    ("norelaying", r"relay(?:ing)? (?:access )?(?:denied|not permitted|prohibited|not allowed)"),
    ("norelaying", r"not permitted to relay|unable to relay|we do not relay|relaying denied"),
    ("norelaying", r"no relaying"),
    ("ratelimited", r"rate limit|too many (?:messages|mails|emails|recipients)|sending rate"),
    ("ratelimited", r"try (?:again )?later.*(?:rate|volume)|throttl"),
    ("badreputation", r"reputation"),
    ("blocked", r"spamhaus|blocklist|blacklist|block list|black list|\brbl\b|\bdnsbl\b"),
    ("blocked", r"blocked using|banned sending ip|client host .*(?:blocked|rejected)"),
    ("blocked", r"ip .*(?:blocked|bloquee)|blocked (?:ip|for spamming)"),
    ("blocked", r"(?<!not )listed (?:in|on|at)|my name was rejected"),
    ("spamdetected", r"\bspam\b|junk mail|unsolicited|bulk mail|\bube\b|message content rejected"),
    ("spamdetected", r"message (?:looks|seems|appears) (?:like|to be)"),
    ("hasmoved", r"has moved|moved to|no longer (?:at|with)|changed (?:his|her|their) address"),
    ("mailboxfull", r"mailbox (?:is )?(?:full|over|exceed)|over ?quota|quota (?:exceed|full)"),
    ("mailboxfull", r"exceeded (?:storage|quota)|disk quota|storage (?:space|quota)|mailbox size"),
    ("mailboxfull", r"mail ?box has exceeded|mailfolder is full|full mailbox"),
    ("mailboxfull", r"is over (?:the )?limit"),
    ("suspend", r"suspend|disabled|deactivated|inactive|not active"),
    ("suspend", r"account (?:has been )?(?:locked|blocked|closed|expired)"),
    ("suspend", r"mailbox (?:is )?(?:locked|closed|frozen)|temporarily unavailable|not been used"),
    ("userunknown", r"user ?unknown|unknown (?:user|recipient|local|mailbox|address|alias)"),
    ("userunknown", r"no such (?:user|mailbox|recipient|address|account|local)"),
    (
        "userunknown",
        r"(?:user|mailbox|recipient|address|account)(?: name)? (?:does not|doesn't) exist",
    ),
    ("userunknown", r"does not exist|not (?:a )?(?:known|valid) (?:user|recipient|mailbox)"),
    ("userunknown", r"invalid (?:recipient|mailbox|user|address)"),
    ("userunknown", r"mailbox (?:not found|unavailable|is unavailable)|user not found"),
    ("userunknown", r"recipient not found|not our customer|no mailbox|addressee unknown"),
    ("userunknown", r"unrouteable address|no valid recipients|unknown or illegal"),
    ("userunknown", r"bad (?:recipient|destination mailbox)|user doesn't have"),
    ("userunknown", r"account does not exist|is not a valid|not listed in|no such person"),
    ("userunknown", r"unknown address|address unknown|dosn't exist"),
    ("userunknown", r"(?<!sender )address rejected(?!:)|invalid (?:final delivery )?userid"),
    ("userunknown", r"unknown_user|user_unknown|invalid mailbox|not exist"),
    ("notaccept", r"no mx (?:record|found)|couldn't find a mail exchanger|doesn't receive e?mail"),
    ("notaccept", r"no smtp service|does not accept mail|not accept(?:ing)? (?:any )?(?:e-?)?mail"),
    ("notaccept", r"null mx|no mail(?:box)? service|does not receive mail"),
    ("hostunknown", r"host (?:or domain name )?not found|unknown host|host unknown"),
    ("hostunknown", r"domain (?:not found|does not exist|unknown)|name or service not known"),
    ("hostunknown", r"no such domain|unrouteable (?:domain|mail domain)|nxdomain|name server"),
    ("hostunknown", r"no mx|mx record|unknown domain|domain (?:name )?(?:is )?invalid"),
    ("hostunknown", r"illegal host|hostname.*not found|couldn't find any host"),
    ("hostunknown", r"host name lookup failure|dns (?:lookup|error)"),
    ("networkerror", r"connection (?:refused|reset|closed|lost)"),
    ("networkerror", r"network (?:error|is unreachable|unreachable)|could not connect"),
    ("networkerror", r"unable to connect|connect to .* failed|no route|loop detected|mail loop"),
    ("networkerror", r"routing loop|too many hops|hop count"),
    ("expired", r"expired|too long in (?:the )?queue|retry timeout|giving up|gave up"),
    ("expired", r"could not be delivered (?:for|within)|delivery time expired"),
    ("expired", r"not going to try again|has been in (?:the )?queue"),
    ("expired", r"did not accept our requests to connect|connection timed out|timed out"),
    ("expired", r"retried for|maximum (?:time|period)|retry time"),
    ("securityerror", r"tls|starttls|certificate|encrypt|not authorized|authentication"),
    ("securityerror", r"unauthenticated|security"),
    ("policyviolation", r"policy|protocol violation|prohibited|not allowed"),
    ("policyviolation", r"content (?:filter|rejected)|attachment|banned"),
    ("filtered", r"filter|denied by|refused by|rejected by (?:the )?recipient|blocked by"),
    ("filtered", r"recipient .* refuses|not accepting"),
    ("blocked", _REFUSAL_WORDS),
    ("blocked", _HOST_REFUSAL_WORDS),
    ("syntaxerror", r"syntax error|command unrecognized|unrecognized command"),
    ("syntaxerror", r"bad sequence of commands|command parameter not implemented|line too long"),
    ("syntaxerror", r"malformed address|incorrectly constructed"),  # Exim: recipient syntax
    ("contenterror", r"content|header|malformed|mime|8bit|invalid character"),
    ("systemerror", r"service (?:currently )?unavailable|transaction failed|\bldap\b"),
    ("systemerror", r"could not load|system (?:error|failure)|internal (?:server )?error"),
    ("systemerror", r"local (?:error|problem)|configuration error|mail system|server error"),
    ("systemerror", r"i/o error|temporary failure|resources|try again later"),
    ("rejected", _REJECT_WORDS),
    ("rejected", r"refused|not accepted"),
    # Trend Micro InterScan MSS says no more than this when the recipient is refused (Sisimai).
    ("userunknown", r"unable to deliver message to <[^<>\s]+@[^<>\s]+>"),
]
_TEXT = [
    (reason, re.compile(pattern, re.IGNORECASE), pattern in _BARE_REFUSALS)
    for reason, pattern in _PHRASES
]


def _lowered(pattern: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    """``pattern`` for lower-cased ASCII text, and the needles that gate it.

    IGNORECASE turns off the regex engine's literal-prefix scan, so the pattern is tried at every
    position. On ASCII text, lower-casing the text and matching case-sensitively finds exactly
    what IGNORECASE finds (Unicode case folding differs only beyond ASCII). A pattern naming an
    upper-case letter keeps IGNORECASE and goes ungated.
    """
    if any(c.isupper() for c in re.sub(r"\\.", "", pattern)):  # escapes (\S, \W) aren't letters
        return re.compile(pattern, re.IGNORECASE), ()
    if _parser is None:
        return re.compile(pattern), ()
    return re.compile(pattern), tuple(sorted(_needles(_parser.parse(pattern).data) or ()))


def _needles(items: list[tuple[Any, Any]]) -> frozenset[str] | None:
    """Literal strings of which every match of the parsed pattern ``items`` holds one, or None.

    A run of literal characters in a sequence is required; so is a group or an alternation
    whose every branch yields needles. Of those, the set whose shortest needle is longest wins.
    Anything else (classes, repeats, look-arounds, anchors) only breaks a run: skipping it errs
    on the side of searching.
    """
    candidates: list[frozenset[str]] = []
    run: list[str] = []
    for op, av in [*items, (None, None)]:
        if op is _constants.LITERAL:
            run.append(chr(av))
            continue
        if run:
            candidates.append(frozenset({"".join(run)}))
            run = []
        if op is _constants.SUBPATTERN and not av[1] and not av[2]:  # no inline flags
            group = _needles(av[3].data)
            if group:
                candidates.append(group)
        elif op is _constants.BRANCH:
            branches = [_needles(branch.data) for branch in av[1]]
            if all(branches):
                candidates.append(frozenset().union(*(b for b in branches if b)))
    if not candidates:
        return None
    return max(candidates, key=lambda needles: min(map(len, needles)))


# The same rows for lower-cased ASCII text, each with its needles: a row whose needles are all
# absent from the text cannot match, and a substring test is far cheaper than a regex search.
_ASCII_TEXT = [(reason, *_lowered(pattern.pattern), bare) for reason, pattern, bare in _TEXT]
# Spectrum (Charter) "AUP#In-1310" codes, from its published table of e-mail error codes
# (spectrum.net, "understanding email error codes"), as Sisimai's Rhost::Spectrum reads it.
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
# RFC 3463 subject.detail codes with one clear meaning.
_STATUS: dict[str, str] = {
    "1.1": "userunknown",
    "1.2": "hostunknown",
    "1.3": "userunknown",
    "1.4": "userunknown",
    "1.5": "userunknown",
    "1.6": "hasmoved",
    "1.7": "rejected",
    "1.8": "rejected",
    "1.10": "userunknown",  # RFC 7505 says null MX; Microsoft uses it for "recipient not found"
    "2.0": "userunknown",
    "2.1": "suspend",
    "2.2": "mailboxfull",
    "2.3": "exceedlimit",
    "2.4": "systemerror",
    "3.0": "systemerror",
    "3.1": "systemfull",
    "3.2": "systemerror",
    "3.3": "systemerror",
    "3.4": "mesgtoobig",
    "3.5": "systemerror",
    "4.0": "networkerror",
    "4.1": "networkerror",
    "4.2": "networkerror",
    "4.3": "systemerror",
    "4.4": "hostunknown",
    "4.5": "systemerror",
    "4.6": "networkerror",
    "4.7": "expired",
    "5.0": "syntaxerror",
    "5.1": "syntaxerror",
    "5.2": "syntaxerror",
    "5.3": "toomanyconn",
    "5.4": "syntaxerror",
    "5.5": "syntaxerror",
    "6.0": "contenterror",
    "6.1": "contenterror",
    "6.2": "contenterror",
    "6.3": "contenterror",
    "6.4": "contenterror",
    "6.5": "contenterror",
    "7.0": "securityerror",
    "7.1": "rejected",
    "7.2": "norelaying",
    "7.3": "securityerror",
    "7.4": "securityerror",
    "7.5": "securityerror",
    "7.6": "securityerror",
    "7.7": "securityerror",
    "7.8": "securityerror",
    "7.9": "securityerror",
    "7.13": "suspend",
    "7.14": "securityerror",
    "7.23": "authfailure",
    "7.24": "authfailure",
    "7.25": "requireptr",
    "7.26": "authfailure",
    "7.27": "notaccept",
}
# Codes that say more than any wording around them.
_DECISIVE = frozenset({"1.1", "1.2", "1.6", "2.2", "2.3", "7.23", "7.24", "7.25", "7.26", "7.27"})
# RFC 3463 X.1.X codes that say the mailbox address itself is unknown or invalid.
_ADDRESS_STATUS = frozenset({"1.1", "1.3", "1.4", "1.5", "1.10"})
# The plain "no such recipient" answers that a content filter also gives in a recipient's name.
_USER_UNKNOWN = re.compile(
    r"\b(?:user unknown|unknown user|no such user|recipient not found)\b"
    r"|email account that you tried to reach does not exist",
    re.IGNORECASE,
)
# au by KDDI (ezweb.ne.jp, au.com), as Sisimai's Rhost::KDDI reads it: "550 <a@b>: User
# unknown" names an unknown address; "550 : User unknown", with the address left out, is what
# its filter answers for a recipient that refuses the sender.
_KDDI_DOMAINS = ("ezweb.ne.jp", "au.com")
_KDDI_REASONS = [
    ("userunknown", re.compile(r">: user unknown", re.IGNORECASE)),
    ("filtered", re.compile(r"\b550 : user unknown", re.IGNORECASE)),
]
_CONTINUATION = re.compile(r"(?<=\S)\s+[245]\d\d[ -](?:[245]\.\d{1,3}\.\d{1,3}\s)?")
# Reasons about one recipient, which cannot be the answer before a recipient was named.
_RECIPIENT_REASONS = frozenset(
    {"userunknown", "hostunknown", "filtered", "mailboxfull", "suspend", "hasmoved", "notaccept"}
)
# Reasons that mean the address itself is bad, so mail to it should stop (Sisimai's hardbounce).
HARD_REASONS = frozenset({"userunknown", "hostunknown", "hasmoved"})


# A server's answer is a few reply lines; a megabyte "diagnostic" is a broken or hostile
# notice, and scanning all of it with every pattern took seconds.
_MAX_DIAGNOSTIC = 10_000


def classify_reason(
    status: str | None,
    diagnostic: str,
    *,
    action: str | None = None,
    command: str | None = None,
    domain: str = "",
) -> str:
    """Sisimai's reason for one recipient's failure.

    ``command`` is the SMTP command the remote server was answering, where the report says;
    ``domain`` is the recipient's domain, for the providers whose answers have their own meaning.
    """
    if action == "delivered":
        return "delivered"
    detail = status.split(".", 1)[1] if status else ""
    if detail in _DECISIVE:
        return _STATUS[detail]
    # "550-5.7.1 first line 550-5.7.1 second line": drop the repeated prefixes so that
    # phrases broken across reply lines (RFC 5321 s4.2.1) still match.
    text = _CONTINUATION.sub(" ", diagnostic[:_MAX_DIAGNOSTIC])
    provider = _provider_reason(text, domain.lower())
    if provider:
        return provider
    reason, bare = _phrase_reason(text)
    if bare and command == "MAIL":
        return "rejected"  # "Access denied" at MAIL FROM: the sender was refused (Sisimai)
    if bare and command == "CONNECT":
        return "blocked"  # "Rejected" at connection or EHLO: the sending host was refused
    if bare and detail.startswith("7.") and detail in _STATUS and detail not in ("7.0", "7.1"):
        # A bare "Rejected" says less than a specific security code (5.7.9: mechanism too weak).
        return _STATUS[detail]
    if reason == "userunknown" and command != "RCPT" and _USER_UNKNOWN.search(text):
        # "User unknown" said after the message was sent is a content filter speaking in the
        # recipient's name (Sisimai's "filtered"), not proof the address is bad; so is a bare
        # "user unknown" backed neither by an address-status code (X.1.1) nor by the RCPT
        # command it answered: nothing shows the server judged the address itself.
        if command == "DATA" or detail not in _ADDRESS_STATUS:
            return "filtered"
    if command == "MAIL" and (reason is None or reason in _RECIPIENT_REASONS):
        return "rejected"  # refused at MAIL FROM: the sender, not the recipient, was refused
    if command == "CONNECT" and (reason is None or reason in _RECIPIENT_REASONS):
        return "blocked"  # refused before any recipient was named: the sending host is blocked
    if reason == "hostunknown" and status and status.startswith("4."):
        return "networkerror"  # a DNS failure the MTA expected to be temporary
    if reason:
        return reason
    if detail in _STATUS:
        return _STATUS[detail]
    if status and status.startswith("4."):
        return "expired" if action == "failed" else "undefined"
    return "onhold" if not diagnostic else "undefined"  # Sisimai: no evidence / unreadable


def phrase_reason(text: str) -> str | None:
    """What the diagnostic's wording alone says (the phrase layer), or None."""
    return _phrase_reason(_CONTINUATION.sub(" ", text[:_MAX_DIAGNOSTIC]))[0]


def _phrase_reason(text: str) -> tuple[str | None, bool]:
    """The first ``_PHRASES`` row matching ``text``: (reason, bare refusal), or (None, False)."""
    if not text.isascii():
        return next(((r, b) for r, pattern, b in _TEXT if pattern.search(text)), (None, False))
    text = text.lower()
    for reason, pattern, needles, bare in _ASCII_TEXT:
        if needles:
            for needle in needles:
                if needle in text:
                    break
            else:
                continue  # no needle: the pattern cannot match
        if pattern.search(text):
            return reason, bare
    return None, False


def _provider_reason(text: str, domain: str) -> str | None:
    """A provider's own documented error code or wording, which names the reason outright."""
    found = _SPECTRUM_AUP.search(text)
    if found:
        code = int(found.group(1))
        return next((r for low, high, r in _SPECTRUM_CODES if low <= code <= high), None)
    if domain.endswith(_KDDI_DOMAINS):
        return next((reason for reason, said in _KDDI_REASONS if said.search(text)), None)
    return None


def classify_hard(reason: str, status: str | None) -> bool:
    """Whether the address itself is bad (suppress it), as opposed to a passing problem."""
    if reason in HARD_REASONS:
        return True
    return reason == "notaccept" and not (status and status.startswith("4."))
