"""PURE: an enhanced status and a diagnostic text -> Sisimai's reason, and hard or soft.

A few status codes are decisive (5.1.1, 5.2.2, 5.7.26 ...). Otherwise the diagnostic text is
read first, because it is the remote server's own words, and the status code decides only when
the text matches nothing: many servers answer 5.7.1 or 5.0.0 for anything. The SMTP command a
reply answered (RFC 5321 s4.1) refines the reason: nothing about a recipient can be said at
MAIL FROM or at connection time.
"""

from __future__ import annotations

import re

# Order matters: the first reason with a matching phrase wins, so the narrow ones come first.
# A reason may take several rows; each row is a regular expression of alternatives.
_PHRASES: list[tuple[str, str]] = [
    ("spamdetected", r"(?:scored|classified|detected|identified|considered|rejected) as spam"),
    ("spamdetected", r"spam classification"),
    ("systemfull", r"insufficient (?:disk|system) (?:space|storage)"),
    ("hostunknown", r"domain (?:name )?(?:does not exist|not found)"),
    ("networkerror", r"name service error|not found, try again|dns query failed"),
    ("networkerror", r"(?:establish|open) an smtp connection"),
    ("rejected", r"(?:not have|no) permission to post"),
    ("rejected", r"sender (?:address )?(?:rejected|denied|unknown|verify|is not verified)"),
    ("rejected", r"domain of sender|sender was rejected|address is not verified"),
    ("rejected", r"mail from .* rejected"),
    ("notcompliantrfc", r"rfc ?5322|rfc ?2822|not (?:rfc )?compliant|multiple addresses in from"),
    ("notcompliantrfc", r"multiple \w+ headers|duplicate headers?"),
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
    ("authfailure", r"\bspf\b|\bdkim\b|\bdmarc\b|authentication (?:failed|required|failure)"),
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
    ("blocked", r"blocked|block|denied|refused|not permitted|access denied|connection rejected"),
    ("blocked", r"client host rejected|rejected due to|banned"),
    ("syntaxerror", r"syntax error|command unrecognized|unrecognized command"),
    ("syntaxerror", r"bad sequence of commands|command parameter not implemented|line too long"),
    ("contenterror", r"content|header|malformed|mime|8bit|invalid character"),
    ("systemerror", r"service (?:currently )?unavailable|transaction failed|\bldap\b"),
    ("systemerror", r"could not load|system (?:error|failure)|internal (?:server )?error"),
    ("systemerror", r"local (?:error|problem)|configuration error|mail system|server error"),
    ("systemerror", r"i/o error|temporary failure|resources|try again later"),
    ("rejected", r"reject|sender (?:address )?(?:rejected|denied|unknown|verify)|domain of sender"),
    ("rejected", r"refused|not accepted"),
]
_TEXT = [(reason, re.compile(pattern, re.IGNORECASE)) for reason, pattern in _PHRASES]
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
_USER_UNKNOWN = re.compile(r"\b(?:user unknown|unknown user|no such user)\b", re.IGNORECASE)
# Postfix's RCPT-time answer names the recipient: "550 <a@b>: User unknown".
_RCPT_FORM = re.compile(
    r"<[^<>\s]+@[^<>\s]+>:\s*(?:recipient address rejected: )?user unknown", re.I
)
_CONTINUATION = re.compile(r"(?<=\S)\s+[245]\d\d[ -](?:[245]\.\d{1,3}\.\d{1,3}\s)?")
# Reasons about one recipient, which cannot be the answer before a recipient was named.
_RECIPIENT_REASONS = frozenset(
    {"userunknown", "hostunknown", "filtered", "mailboxfull", "suspend", "hasmoved", "notaccept"}
)
# Reasons that mean the address itself is bad, so mail to it should stop (Sisimai's hardbounce).
HARD_REASONS = frozenset({"userunknown", "hostunknown", "hasmoved"})


def classify_reason(
    status: str | None, diagnostic: str, *, action: str | None = None, command: str | None = None
) -> str:
    """Sisimai's reason for one recipient's failure.

    ``command`` is the SMTP command the remote server was answering, where the report says.
    """
    if action == "delivered":
        return "delivered"
    detail = status.split(".", 1)[1] if status else ""
    if detail in _DECISIVE:
        return _STATUS[detail]
    # "550-5.7.1 first line 550-5.7.1 second line": drop the repeated prefixes so that
    # phrases broken across reply lines (RFC 5321 s4.2.1) still match.
    text = _CONTINUATION.sub(" ", diagnostic)
    reason = next((r for r, pattern in _TEXT if pattern.search(text)), None)
    if reason == "userunknown" and command != "RCPT" and _USER_UNKNOWN.search(text):
        # "User unknown" said after the message was sent is a content filter speaking in the
        # recipient's name (Sisimai's "filtered"), not proof the address is bad; so is a bare
        # "user unknown" with no address-status (X.1.X) code and no RCPT-time form.
        if command == "DATA" or not (detail.startswith("1.") or _RCPT_FORM.search(text)):
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


def classify_hard(reason: str, status: str | None) -> bool:
    """Whether the address itself is bad (suppress it), as opposed to a passing problem."""
    if reason in HARD_REASONS:
        return True
    return reason == "notaccept" and not (status and status.startswith("4."))
