"""Which failures a retry may cure: the one table the builders, the push path and the
registry client read.

A failure is *transient* when the engine or a registry was gone or slow (a retry with backoff
may pass once it is back) and *permanent* when what was asked for is wrong (a RUN step exited
non-zero, the Dockerfile does not parse, the registry refused the credentials): retrying those
would loop on the same answer. Permanent rules are read first, so a failing step whose own
output quotes "connection refused" stays a failing step. Anything no rule names is permanent.

Evidence for "unexpected EOF" (docker CLI 20.10, built-in BuildKit, ``kill -9`` of the engine
during ``RUN sleep``): the CLI's last line is ``unexpected EOF`` and no step reports an
``ERROR``. A RUN that fails prints ``#5 ERROR: executor failed running [...]: exit code: 3``
(buildx: ``did not complete successfully: exit code: 3``), and whatever the command printed
appears as ``#5 0.131 ...`` step output, which :func:`error_lines` leaves out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    """One kind of failure: a pattern, whether a retry may cure it, and its name."""

    pattern: re.Pattern[str]
    transient: bool
    kind: str


def _rule(pattern: str, transient: bool, kind: str) -> Rule:
    return Rule(re.compile(pattern, re.IGNORECASE), transient, kind)


# Read top to bottom; the first rule that matches decides.
RULES: tuple[Rule, ...] = (
    _rule(r"executor failed running|did not complete successfully|exit code: \d+", False, "step"),
    _rule(r"dockerfile parse error|unknown instruction|failed to parse dockerfile", False, "parse"),
    _rule(
        r"\bdenied\b|unauthori[sz]ed|authentication required|\bforbidden\b|"
        r"no basic auth credentials|incorrect username or password|invalid username/password",
        False,
        "refused",
    ),
    _rule(
        r"cannot connect to the docker daemon|error during connect|failed to dial grpc|"
        r"is the docker daemon running",
        True,
        "engine",
    ),
    _rule(
        r"connection refused|connection reset|broken pipe|unexpected eof|(?:^|[\s:])eof$|"
        r"connection closed|transport is closing|code = unavailable|connection broken|"
        r"remote end closed connection|no route to host|network is unreachable|"
        r"temporary failure in name resolution|server misbehaving|i/o timeout|"
        r"tls handshake timeout|timed out|timeout exceeded|deadline exceeded|"
        r"toomanyrequests|too many requests",
        True,
        "connection",
    ),
)
_STATUS = re.compile(
    r"\b(?:HTTP|status)(?: status| code)?:?\s+([1-5]\d\d)\b|\b([45]\d\d) (?:Bad Request|"
    r"Unauthorized|Forbidden|Not Found|Request Timeout|Too Many Requests|Internal Server Error|"
    r"Bad Gateway|Service Unavailable|Gateway Timeout|Client Error|Server Error)\b",
    re.IGNORECASE,
)
_STEP_LOG = re.compile(r"^(?:#\d+ )?\d+\.\d+ ")  # "#5 0.131 text" / "0.131 text": a step's output
_QUOTE_FENCE = re.compile(r"^-{6,}$")  # BuildKit quotes a failed step's output between fences
_DOCKERFILE_EXCERPT = re.compile(r"^\s*\d+ \| ")


@dataclass(frozen=True)
class Verdict:
    """The classification of one failure and the text that decided it."""

    transient: bool
    kind: str
    evidence: str


def status_is_transient(code: int) -> bool:
    """5xx, 408 Request Timeout and 429 Too Many Requests may pass; other 4xx will not.

    >>> [status_is_transient(c) for c in (503, 429, 408, 404, 401)]
    [True, True, True, False, False]
    """
    return code >= 500 or code in (408, 429)


def _match_status(text: str) -> Verdict | None:
    codes = [int(m[1] or m[2]) for m in _STATUS.finditer(text)]
    code = next((c for c in codes if 400 <= c < 600), None)
    if code is None:
        return None
    return Verdict(status_is_transient(code), f"http {code}", text.strip())


def classify(text: str) -> Verdict:
    """Classify one error message (a CLI line, an engine or registry message).

    >>> classify("unexpected EOF").transient
    True
    >>> classify("executor failed running [/bin/sh -c false]: exit code: 1").kind
    'step'
    """
    for rule in RULES[:3]:
        if rule.pattern.search(text):
            return Verdict(rule.transient, rule.kind, text.strip())
    if (status := _match_status(text)) is not None:
        return status
    for rule in RULES[3:]:
        if rule.pattern.search(text):
            return Verdict(rule.transient, rule.kind, text.strip())
    return Verdict(False, "unknown", text.strip())


def error_lines(lines: Iterable[str]) -> list[str]:
    """The lines of BuildKit ``--progress=plain`` output that the CLI or BuildKit wrote
    about the build itself: not a step's own output, not quoted output or Dockerfile text."""
    found: list[str] = []
    quoted = False
    for line in lines:
        if _QUOTE_FENCE.match(line.strip()):
            quoted = not quoted
            continue
        if quoted or _STEP_LOG.match(line) or _DOCKERFILE_EXCERPT.match(line):
            continue
        if line.strip():
            found.append(line.strip())
    return found


def classify_output(lines: Iterable[str]) -> Verdict:
    """Classify a failed build from its output: a permanent line anywhere wins, then the
    first transient one; output that names neither is permanent.

    >>> classify_output(["#5 [2/2] RUN sleep 9", "#5 0.15 start", "unexpected EOF"]).transient
    True
    >>> classify_output(["#5 0.1 unexpected EOF", "#5 ERROR: executor failed running"]).kind
    'step'
    """
    verdicts = [classify(line) for line in error_lines(lines)]
    known = [v for v in verdicts if v.kind != "unknown"]
    permanent = [v for v in known if not v.transient]
    chosen = permanent or known
    if chosen:
        return chosen[0]
    return Verdict(False, "unknown", verdicts[-1].evidence if verdicts else "")
