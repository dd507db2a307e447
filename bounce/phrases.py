"""PURE: the phrase layer's table: families of wording per Sisimai reason, each row with its source.

Each family is written from what its reason MEANS (Sisimai's reason definitions, libsisimai.org
"reason" pages), using the words mail systems use for it; a row names where its wording comes
from: ``sisimai:<Reason>`` (that reason's documented index of wordings), ``rfc3463``/``rfc5321``
(the text an RFC gives for a code), ``vendor:<who, which doc>``, or ``corpus`` for a row that
exists only because a corpus file said it (the cross-validation in tests/test_bounce_corpus.py
switches such a row off for a family unless it also decides another family's mail).

Order matters: the first row that matches decides, so narrow wordings come before broad ones.
``bare`` marks a refusal word that says something was refused, not why: the SMTP stage or a
specific status code says more (see ``bounce.classify.PRECEDENCE``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PhraseRow:
    """One regular expression of alternatives (for lower-cased text) naming one reason."""

    id: str
    reason: str
    pattern: str
    source: str
    bare: bool = False


_COUNT: dict[str, int] = {}


def _rows(reason: str, source: str, *patterns: str, bare: bool = False) -> list[PhraseRow]:
    """Rows of one family, numbered per reason in table order (``userunknown.3``)."""
    rows = []
    for pattern in patterns:
        _COUNT[reason] = _COUNT.get(reason, 0) + 1
        rows.append(PhraseRow(f"{reason}.{_COUNT[reason]}", reason, pattern, source, bare))
    return rows


S = "sisimai:"
# Who refused, said with no why: the sender (MAIL), the host (CONNECT) or a code says more.
BARE_BLOCK = r"\bblocked\b|\bdenied\b|\brefused\b|not permitted|access denied|banned"
BARE_REJECT = r"\breject(?:ed|ing)?\b|not accepted"

_TABLE: list[PhraseRow] = [
    # -- the narrowest: a program or a queue speaking about itself ------------------------
    # Sisimai MailerError: a local delivery program (pipe, procmail, maildrop, an LDA) failed.
    *_rows(
        "mailererror",
        S + "MailerError",
        r"pipe to \|/|mailer error|command (?:died with status|failed: |output:)",
        r"procmail: |bin/procmail|bin/maildrop|\|\| exit |x-unix; ",
    ),
    # An LDA that could not create the mailbox file is a mailer failing, not the address.
    *_rows(
        "mailererror",
        S + "MailerError",
        r"(?:couldn't|could not|can't|cannot|unable to|failed to) (?:create|open|write|lock)"
        r" (?:the )?(?:mail ?box|maildir|mail ?file|mail ?folder|(?:lock|temp) ?file|spool)",
        r"(?:couldn't|could not|can't|cannot) create (?:[\"']?/|file\b|directory\b)",
        r"(?:dovecot-lda|maildrop|deliver(?:mail)?|mail\.local|lmtp|cyrus)(?:\[\d+\])?: "
        r"(?:error|fatal|couldn't|could not|can't)",
    ),
    *_rows("systemerror", S + "SystemError", r"can't create user output file"),
    # Sisimai Speeding (Gmail's per-recipient receiving rate; Postfix's slow-down answer).
    *_rows(
        "speeding",
        S + "Speeding",
        r"receiving mail at a rate that prevents|please try again slower",
    ),
    *_rows("systemerror", "corpus", r"contact ldap server"),
    *_rows("hostunknown", S + "HostUnknown", r"the account or domain may not exist"),
    *_rows(
        "notcompliantrfc",
        S + "NotCompliantRFC",
        r"rfc ?5322|rfc ?2822|not (?:rfc )?compliant|multiple addresses in from",
        r"multiple \w+ headers?|duplicate headers?|rfcmessagenoncompliant",
    ),
    *_rows(
        "spamdetected",
        S + "SpamDetected",
        r"(?:scored|classified|detected|identified|considered|rejected) as (?:bulk|spam)",
        r"spam classification|spam score|spam content|probable spam|spam-like",
        r"appears to be (?:unsolicited|spam)|looks? like spam|seems to be a? ?spam",
        r"unsolicited bulk|message content rejected|content filter rejection",
        r"unacceptable content|rejecting (?:banned|mail) content|spamassassin",
        r"message (?:contains|considered as) spam|spam (?:blocked|detected|refused)",
        r"antispam checks|triggered a spam block|classification as bulk mail",
    ),
    *_rows(
        "policyviolation",
        S + "PolicyViolation",
        r"content presents a potential|denied by policy|local policy violation",
        r"(?:message|email) (?:not accepted|rejected) (?:for|due to) (?:local )?policy",
        r"rejected for policy reasons|organi[sz]ation(?:al)? (?:policy|settings)",
        r"by non-member to a members-only list|closed mailing list|protocol violation",
        r"illegal attachment|header error|headers? (?:are|is) not accepted",
    ),
    *_rows("spamdetected", S + "SpamDetected", r"mail rejete\. mail rejected\. .{0,12}506"),
    # The public IP blocklists by name (Spamhaus, SpamCop, the CBL, SORBS, Barracuda's BRBL):
    # whoever quotes one is refusing the sending host, whatever verb comes with it.
    *_rows(
        "blocked",
        S + "Blocked",
        r"spamhaus|spamcop|abuseat|sorbs\.net|barracudacentral|blocked using|\bdnsbl\b",
    ),
    # Sisimai Rejected: the envelope sender (MAIL FROM) was refused.
    *_rows(
        "rejected",
        S + "Rejected",
        r"sending to/from an address that has been blacklisted|sender is in my black list",
        r"different address or alias using the|(?:not have|no) permission to post",
        r"not a member of this (?:mailing )?list|not allowed to post to this",
        r"sender (?:email )?(?:address )?(?:rejected|denied|unknown|verify)",
        r"sender was rejected|sender is spammer|invalid sender|bogus mail from",
        r"domain of sender|sender domain (?:is empty|must exist)|unroutable sender",
        r"can't determine purported responsible address|not a registered gateway user",
        r"null sender is not allowed|empty envelope senders|returned mail not accepted",
        r"mail from (?!ip\b|host\b|your ip\b).{0,80} rejected",
        r"this server does not accept mail from",
        r"your (?:email )?address has been blacklisted|mail from not owned by user",
    ),
    # Yahoo's [TSS04] deferral, said at MAIL FROM: labelled rejected in the corpus.
    *_rows("rejected", "corpus", r"deferred due to unexpected volume or user complaints"),
    # Exchange Online's directory-based edge blocking (DBEB) and its kin: the recipient is
    # not in the directory (Sisimai UserUnknown: "recipient address rejected: access denied").
    *_rows(
        "userunknown",
        S + "UserUnknown",
        r"recipient address rejected: (?:access denied|invalid user|unknown user|userunknown)",
        r"address not present in directory|resolver\.adr\.recipient ?not ?found",
    ),
    # Sisimai NoRelaying: the host is not a relay for that domain.
    *_rows(
        "norelaying",
        S + "NoRelaying",
        r"relay(?:ing)? (?:access )?(?:denied|not permitted|prohibited|not allowed)",
        r"not permitted to relay|unable to relay|we do not relay|no relaying|as a relay",
        r"not (?:allowed|configured) to relay|open relay|insecure mail relay|not a gateway",
        r"email address is not verified|we don't handle mail for|not local host",
    ),
    # Sisimai AuthFailure: SPF, DKIM, DMARC (and ARC) failed.
    *_rows(
        "authfailure",
        S + "AuthFailure",
        r"\bspf\b|\bdkim\b|\bdmarc\b|sender policy framework",
        r"(?:required )?authentication (?:level|requirements defined for the sender)",
    ),
    # Sisimai RequirePTR: the sending host has no (or a mismatched) reverse DNS name.
    *_rows(
        "requireptr",
        S + "RequirePTR",
        r"reverse (?:dns|lookup|dns lookup)|\bptr\b|no (?:ptr|rdns)|\brdns\b",
        r"cannot find your (?:reverse )?hostname|resolve your (?:ip|address)|ip name lookup failed",
        r"mismatches client ip|unverifyable sending ips|unresolvable relay host name",
        r"forward dns entry does not point to the sending ip",
    ),
    # Sisimai TooManyConn: too many connections, recipients or messages at once or per
    # period; this Sisimai version files rate limits here (it has no "ratelimited").
    *_rows(
        "toomanyconn",
        S + "TooManyConn",
        r"too many (?:connections|concurrent|simultaneous|smtp sessions|sessions|errors)",
        r"too many (?:recipients|messages|mails|emails)|connection (?:frequency|limit)",
        r"(?:connection )?rate limit|sending rate|max(?:imum)? emails per (?:hour|day)",
        r"throttl|trop de connexions|maximum connection limit|per-domain connection limit",
        r"numerous attempts to deliver this message|(?:hourly|daily) .{0,20}limit",
        r"sent to too many recipients|recipients? (?:limit|quota) exceeded",
    ),
    *_rows("virusdetected", S + "VirusDetected", r"virus|malware|infected|trojan|worm\b"),
    # Sisimai Suspend: the mailbox exists but its account is disabled, frozen or suspended.
    *_rows(
        "suspend",
        S + "Suspend",
        r"temporar(?:y|ily) locked|is currently suspended|has been suspended",
        r"(?:account|mailbox|user|recipient)(?: is| has been)? (?:locked|disabled|suspended"
        r"|deactivated|inactive|frozen|blocked|terminated|archived|closed|discontinued)",
        r"(?:inactive|disabled|deactivated|suspended|archived) (?:account|mailbox|user"
        r"|recipient)|compte du destinataire est bloque|boite du destinataire archivee",
        r"tried to reach is (?:disabled|inactive)|user or domain is disabled",
        r"(?:mailbox|account) (?:has )?not been used|recipient suspend",
    ),
    # Sisimai MesgTooBig / ExceedLimit (a per-recipient limit: RFC 3463 X.2.3).
    *_rows(
        "exceedlimit",
        S + "ExceedLimit",
        r"(?:limit set by recipient|recipsizelimit|too large for this recipient)",
    ),
    *_rows(
        "mesgtoobig",
        S + "MesgTooBig",
        r"message (?:is |file )?too (?:big|large)|size (?:limit|exceeds)|too large",
        r"exceeds? (?:the )?(?:maximum )?(?:inbound |incoming )?(?:message )?size",
        r"message (?:size|length) exceeds|max message size|taille limite du message",
        r"(?:message|mail) size (?:has )?exceeded|exceeded the (?:message )?size limit",
    ),
    *_rows(
        "systemfull",
        S + "SystemFull",
        r"insufficient (?:disk|system) (?:space|storage)|mail system full",
    ),
    # Sisimai MailboxFull: the recipient's own storage is used up.
    *_rows(
        "mailboxfull",
        S + "MailboxFull",
        r"mail ?box (?:is )?(?:full|over|exceed)|over ?quota|quota (?:exceed|full|violation)",
        r"exceeded (?:storage|quota)|disk quota|storage (?:space|quota|allocation)",
        r"mail ?box (?:size|has exceeded|would exceed)|mailfolder is full|full mailbox",
        r"is over (?:the )?(?:quota|limit)|user has exceeded|space has been used up",
        r"not sufficient disk space|boite du destinataire pleine",
        r"too many messages on the server|too much mail data|not enough (?:disk )?space",
    ),
    # Sisimai Blocked: the sending host or its IP address is refused (lists, reputation).
    *_rows("badreputation", S + "BadReputation", r"reputation"),
    *_rows(
        "blocked",
        S + "Blocked",
        r"spamhaus|spamcop|barracuda|abuseat|blocklist|blacklist|block list|black list",
        r"\w*rbl\b|\bdnsbl|\bcbl\b|blocked using|banned sending ip",
        r"(?<!not )listed (?:in|on|at)",
        r"client host .{0,40}(?:blocked|rejected)|helo command rejected|my name was rejected",
        r"(?:source )?ip (?:address )?.{0,30}(?:blocked|bloquee|blacklisted|rejected)",
        r"blocked (?:ip|for spam)|\bip\b.{0,40}\bblocked\b|dynamic ip",
        r"connection refused by|service refuse|not allowed to connect|go away",
        r"not currently accepting mail from your ip|your (?:server|network|ip)",
        r"suspiciously like spammer|you are sending spam|rejecting open proxy",
        r"(?:client|sending) (?:host|mta|ip) (?:has not passed|rejected|blocked)",
    ),
    *_rows("spamdetected", S + "SpamDetected", r"\bspam\b|junk mail|unsolicited|bulk mail"),
    # Sisimai HasMoved: the mailbox moved and mail is not forwarded (RFC 3463 X.1.6).
    *_rows(
        "hasmoved",
        S + "HasMoved",
        r"has been replaced by|has moved|moved to|changed (?:his|her|their) address",
        r"no longer (?:on|at|with) (?:this )?server|no longer (?:at|with)",
    ),
    *_rows(
        "networkerror",
        S + "NetworkError",
        r"not found, try again|dns query failed|host name lookup failure",
        r"(?:establish|open) an smtp connection|no route to host|host is unreachable",
        r"network (?:error|is unreachable|unreachable)|could not connect and send",
        r"connection (?:reset|closed|lost)|loop detected|mail(?:ing)? loop|routing loop",
        r"too many hops|hop count|forwarding loop|message looping|malformed .{0,20}reply",
    ),
    # Sisimai HostUnknown: the domain part does not exist (and networkerror when a DNS
    # failure was only temporary: see PRECEDENCE).
    *_rows(
        "hostunknown",
        S + "HostUnknown",
        r"authoritative answer from name server",
        r"(?<![@\w.-])(?:[a-z0-9-]+\.)+[a-z]{2,} does not exist",
        r"domain (?:name )?(?:does not exist|not found|must exist|unknown|is invalid)",
        r"domain is not reachable|host (?:or domain name )?not found|unknown (?:host|domain)",
        r"host unknown|host unreachable|name or service not known|no such domain",
        r"unrout(?:e)?able (?:address|domain|mail domain)|nxdomain|invalid domain",
        r"mail domain mentioned in email address is unknown|illegal host",
        r"recipient domain must exist|couldn't find any host|host [a-z0-9.-]+ not found",
    ),
    *_rows(
        "notaccept",
        S + "NotAccept",
        r"no mx (?:record|found)|couldn't find a mail exchanger|doesn't receive e?mail",
        r"no smtp service|does not accept (?:any )?mail",
        r"not accept(?:ing)? (?:any )?(?:e-?)?mail",
        r"null ?mx|no mail(?:box)? service|does not receive mail|mail receiving disabled",
    ),
    # Sisimai UserUnknown: the local part does not exist there.
    *_rows(
        "userunknown",
        S + "UserUnknown",
        r"user ?unknown|unknown (?:user|recipient|local|mailbox|address|alias|e-?mail)",
        r"no such (?:user|mailbox|recipient|address|account|person)",
        r"(?:user|mailbox|recipient|address|account)(?: name)? (?:does not|doesn't|not) exist",
        r"(?:address|recipient|user|mailbox|account)(?: name)? (?:couldn't|could not|can't"
        r"|cannot|wasn't|was not) be(?:en)? found|(?:e-?mail )?address could not be found",
        r"not (?:a )?(?:known|valid|local|active) (?:user|recipient|mailbox|address)",
        r"invalid (?:recipient|mailbox|user|address)",
        r"mailbox (?:not (?:found|present)|unavailable|is unavailable|invalid)",
        r"(?:user|recipient|addressee) (?:not found|unknown|not known|not active)",
        r"(?:recipient|user|address)(?: name)? (?:is )?not recognized",
        r"not our customer|no mailbox|no account by that name|bad (?:address|recipient)",
        r"unknown or illegal|no valid recipients|there is no one at this address",
        r"user doesn't have|does not exist|not exist|is not a valid",
        r"(?<!sender )(?<!ip )address rejected(?!:)|badrcptto|validrcptto|no longer valid",
        r"destination (?:addresses were unknown|server rejected recipients)",
    ),
    # Exchange / Office 365 NDR "550 5.1.1 RESOLVER.ADR.RecipNotFound" (Microsoft Learn, "Fix
    # email delivery issues for error code 5.1.1"): the directory has no such recipient.
    *_rows("userunknown", "vendor:Microsoft, NDR 5.1.1", r"resolver\.adr\.recip(?:ient)?notfound"),
    # Sisimai Expired: the queue gave up after retrying. Below the causes on purpose: where
    # the last attempt's cause (a refused name, an unknown user, a DNS failure) is quoted
    # beside "I'm not going to try again", the cause is the reason.
    *_rows(
        "expired",
        S + "Expired",
        r"(?:in|on) the queue too long|too long in (?:the )?queue|not going to try again",
        r"delivery (?:time )?expired|message expired|envelope expired|retry timeout exceeded",
        r"could not (?:be )?deliver(?:ed)? for (?:more than |the last )?\d",
        r"delivery failed \d+ attempts|still undelivered after|unable to deliver .{0,30}after",
        r"retry time not reached|have been failing for a long time|message timed out",
        r"(?:has been|was) in (?:the )?queue|did not accept our requests to connect",
        r"was not reachable within the allowed queue period|after multiple retries",
        r"has been delayed|delivery attempts will continue|will be retried for",
    ),
    # No server answered at all (the connection was refused, or it or its greeting timed out):
    # the queue keeps retrying and gives up; nobody refused the mail. Above the bare refusal
    # words on purpose, which would otherwise read "Connection refused" as a block.
    *_rows(
        "expired",
        S + "Expired",
        r"connection timed out|timed out while|server did not respond|no answer from host",
    ),
    *_rows("expired", "corpus", r"connection refused"),
    # Sisimai SecurityError / FailedSTARTTLS: authentication or encryption.
    *_rows(
        "failedstarttls",
        S + "FailedSTARTTLS",
        r"starttls is required|tls required but not supported",
    ),
    *_rows(
        "securityerror",
        S + "SecurityError",
        r"authentication (?:required|failure|failed|credentials)|unauthenticated",
        r"not authorized to send|verification failure|\btls\b|starttls|certificate",
        r"encrypt|authentication|security",
    ),
    *_rows("policyviolation", S + "PolicyViolation", r"policy|prohibited|not allowed"),
    # Sisimai Filtered: the recipient's own rules or a content filter refused the message.
    *_rows(
        "filtered",
        S + "Filtered",
        r"message filtered|user rules|recipient preferences|refuses? to (?:receive|accept)",
        r"only accepting mail from|blocked by the recipient|rejected by (?:the )?recipient",
        r"user reject|account is protected by|is not accepting any mail|filter",
    ),
    *_rows("blocked", S + "Blocked", BARE_BLOCK, bare=True),
    *_rows(
        "syntaxerror",
        S + "SyntaxError",
        r"syntax error|command unrecognized|unrecognized command|improper sequence",
        r"bad sequence of commands|command parameter not implemented|line too long",
        r"malformed address|incorrectly constructed",
    ),
    *_rows(
        "contenterror",
        S + "ContentError",
        r"content|header|malformed|mime|8-?bit|invalid character|base64",
    ),
    *_rows(
        "systemerror",
        S + "SystemError",
        r"service (?:currently )?unavailable|transaction failed|\bldap\b|could not load",
        r"system (?:error|failure)|internal (?:server )?error|local (?:error|problem)",
        r"configuration error|misconfigured|i/o error|write error|interrupted system call",
        r"error while being processed|loops back to myself",
    ),
    *_rows("rejected", S + "Rejected", BARE_REJECT, bare=True),
    # Wordings seen in one corpus file each, with no documented family behind them.
    *_rows("policyviolation", "corpus", r"host network not allowed"),  # Mimecast
    *_rows("userunknown", "corpus", r"invalid final delivery userid|not listed in"),
    *_rows("systemerror", "corpus", r"insufficient permission"),
    # Trend Micro InterScan MSS says no more than this when the recipient is refused.
    *_rows("userunknown", "vendor:Trend Micro InterScan MSS", r"unable to deliver message to <"),
]
PHRASES: tuple[PhraseRow, ...] = tuple(_TABLE)
