"""The secret redaction engine: find credentials in text and replace each with a typed placeholder.

Pure (no proxy, no I/O): `Redactor.redact(text)` returns the text with every secret replaced by
`[REDACTED:<kind>]` and the number replaced per kind.

The rules are Yelp's detect-secrets: the patterns of its regex detectors (AWS, GitHub, GitLab, Slack, Stripe,
Twilio, SendGrid, PyPI, npm, Discord, Mailchimp, Telegram, Square, Azure storage, OpenAI's older keys, JWTs,
private keys, basic-auth URLs), read from the installed package, and keyword assignments (`password=…`,
`token: "…"`, `export OPENAI_API_KEY=…`) built from its KeywordDetector's keyword list and filtered with its
heuristics. Added here, for what it does not know: Anthropic keys (`sk-ant-`), current OpenAI keys (`sk-proj-`,
`sk-svcacct-`, `sk-admin-`) and other `sk-` keys, Google API keys (`AIza`), GitHub fine-grained tokens
(`github_pat_`), AWS secret keys outside quotes, whole PEM private-key blocks (detect-secrets flags only the
BEGIN line), credential headers (`Authorization: Bearer …`, `Basic …`, `x-api-key: …`) and this proxy's own
tokens (`aigw_…`).

Speed: detect-secrets scans line by line with each plugin, ~3 s for a 256 KiB prompt. Here each rule runs once
over the whole text, and only when one of its literal markers occurs in it (one lower-casing and a few substring
searches), so text without any marker costs well under a millisecond per 100 KiB; `bench/redaction_bench.py`
prints the figures.

Placeholders never match a rule, so redacting twice changes nothing (log lines of already redacted records).
Spans never take a backslash or a quote, so JSON text (tool-call inputs) stays valid JSON.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from detect_secrets.filters.heuristic import (
    is_potential_uuid,
    is_prefixed_with_dollar_sign,
    is_sequential_string,
    is_templated_secret,
)
from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
from detect_secrets.plugins.basic_auth import BasicAuthDetector
from detect_secrets.plugins.discord import DiscordBotTokenDetector
from detect_secrets.plugins.github_token import GitHubTokenDetector
from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
from detect_secrets.plugins.jwt import JwtTokenDetector
from detect_secrets.plugins.keyword import DENYLIST as DETECT_SECRETS_KEYWORDS
from detect_secrets.plugins.mailchimp import MailchimpDetector
from detect_secrets.plugins.npm import NpmDetector
from detect_secrets.plugins.openai import OpenAIDetector
from detect_secrets.plugins.pypi_token import PypiTokenDetector
from detect_secrets.plugins.sendgrid import SendGridDetector
from detect_secrets.plugins.slack import SlackDetector
from detect_secrets.plugins.square_oauth import SquareOAuthDetector
from detect_secrets.plugins.stripe import StripeDetector
from detect_secrets.plugins.telegram_token import TelegramBotTokenDetector
from detect_secrets.plugins.twilio import TwilioKeyDetector

PLACEHOLDER: Final = "[REDACTED:{kind}]"
_PLACEHOLDER_START: Final = "[REDACTED:"
KIND_RE: Final = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")  # kinds are metric label values and placeholder text

Validator = Callable[[str, re.Match[str]], bool]
"""(text, match) → whether the match really is a secret."""
Locator = Callable[[str, re.Match[str]], "tuple[int, int, str] | None"]
"""(text, match) → the secret's span and kind, or None when it is none (replaces `group` and `valid`)."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One kind of secret.

    - `markers`: lower-case literals of which every match contains one; the rule runs only when the text has
      one (empty: always).
    - `group`: the part of the match that is the secret.
    - `left`: the match must start at a token boundary (`AKIA…` inside a longer base64 run is no key). Checked
      after matching: a leading look-behind would make the regex engine try every position of the text.
    - `extend`: the pattern matched a token's known prefix and length: cover the rest of the token too.
    - `anchored`: match only where a marker occurs, starting up to `back` key characters before it
      (case-insensitive rules, which the regex engine would otherwise try at every position).
    """

    kind: str
    pattern: re.Pattern[str]
    markers: tuple[str, ...] = ()
    group: int | str = 0
    left: bool = False
    extend: bool = False
    anchored: bool = False
    back: int = 0
    valid: Validator | None = None
    locate: Locator | None = None


@dataclass(frozen=True, slots=True)
class Finding:
    start: int
    end: int
    kind: str


@dataclass(slots=True)
class Redacted:
    text: str
    counts: Counter[str] = field(default_factory=Counter)


# -- building blocks -------------------------------------------------------------------------------------------

_TOKEN_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_KEY_CHARS: Final = _TOKEN_CHARS | {"."}
_TRIM: Final = " \t\r\n\"'`"  # what a span is trimmed of at either end
_RIGHT: Final = r"(?![A-Za-z0-9_-])"  # a token ends here


def _ds(detector: type, index: int = 0) -> re.Pattern[str]:
    """Pattern `index` of a detect-secrets detector."""
    return detector.denylist[index]  # type: ignore[attr-defined]


def _ended(pattern: re.Pattern[str]) -> re.Pattern[str]:
    """A detect-secrets pattern of a fixed-length token that must not go on (`AKIA` + 16, then more letters,
    is part of something longer)."""
    return re.compile(pattern.pattern + _RIGHT, pattern.flags)


def _jwt_valid(text: str, m: re.Match[str]) -> bool:
    return bool(JwtTokenDetector.is_formally_valid(m.group(0)))


def _basic_header_valid(text: str, m: re.Match[str]) -> bool:
    """`Basic base64(user:secret)` only: "Basic setup" stays readable."""
    try:
        return b":" in base64.b64decode(m.group("b64"), validate=True)
    except (binascii.Error, ValueError):
        return False


def _has_digit(s: str) -> bool:
    return any(c.isdigit() for c in s)


def _word_start(text: str, i: int) -> bool:
    return i == 0 or not text[i - 1].isalnum()


def _sk_valid(text: str, m: re.Match[str]) -> bool:
    """A generic `sk-…` key has digits and letters (prose such as `sk-learn` has no digits)."""
    body = m.group(0)[3:]
    return _has_digit(body) and any(c.isalpha() for c in body)


def _prefixed(detector: type, chars: str, low: int, high: int) -> Locator:
    """For detect-secrets patterns that open with a character class (Telegram's `\\d{8,10}:…`, Discord's
    `[MNO]…`, Mailchimp's `[0-9a-z]{32}-us…`), which the regex engine would try at every position: the rule
    searches their distinctive part, then this takes `low..high` characters of `chars` before it and checks the
    whole token with the detector's own pattern."""
    allowed = frozenset(chars)
    pattern = _ds(detector)

    def locate(text: str, m: re.Match[str]) -> tuple[int, int, str] | None:
        end = m.start()
        start = end
        while start > 0 and end - start < high + 1 and text[start - 1] in allowed:
            start -= 1
        n = end - start
        if not low <= n <= high or (start > 0 and text[start - 1] in _TOKEN_CHARS):
            return None
        if not pattern.fullmatch(text, start, m.end()):
            return None
        return start, m.end(), ""

    return locate


_DIGITS = "0123456789"
_ALNUM_LOWER = "abcdefghijklmnopqrstuvwxyz" + _DIGITS
_URLSAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZ" + _ALNUM_LOWER + "_-"


# -- keyword assignments (detect-secrets' KeywordDetector, made fit for prompts) ----------------------------------

# Its keywords (api_?key, password, secret, …) plus tokens and access keys, which it leaves to other plugins.
KEYWORDS: Final = (*DETECT_SECRETS_KEYWORDS, "token", "access_?key")
KEYWORD_MARKERS: Final = ("key", "pass", "pwd", "secret", "token", "contrase")  # one is in every keyword
# Keys that name something about a secret rather than hold one (`token_type`, `max_tokens`, `password_file`).
_KEY_NOT_SECRET: Final = re.compile(
    r"(?:^|[_.-])(?:ids?|names?|types?|kinds?|counts?|len|length|size|limit|budget|usage|file|path|dir|env|field|"
    r"url|uri|prefix|suffix|hint|format|mode|header|policy|expir\w*|ttl|timeout|tokens|regex|pattern|hash|"
    r"salt|store|manager|provider|source|rotation|required|min|max|keys|fn|func)$|^(?:max|min|num|n)[_-]",
    re.IGNORECASE,
)
_IDENTIFIER_CHAIN: Final = re.compile(r"[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)*")
_NOT_SECRETS: Final = frozenset(
    {"none", "null", "nil", "true", "false", "undefined", "yes", "no", "string", "str", "bytes", "int", "bool",
     "float", "any", "list", "dict", "optional", "required", "secret", "password", "token", "redacted", "hidden",
     "masked", "changeme", "example"}
)
_KEYWORD_RULE: Final = re.compile(
    r"(?<![A-Za-z0-9_.-])(?P<key>[A-Za-z0-9_.-]{0,64}?(?:" + "|".join(KEYWORDS) + r")[A-Za-z0-9_.-]{0,64})"
    r"(?:\\?[\"'\]]){0,2}[ \t]*(?P<op>:=|=>|={1,3}|!==?|:)[ \t]*"
    r"(?:(?P<q>\\?[\"'`])(?P<qv>(?:(?!(?P=q))[^\s\\]){1,256})(?P=q)"
    r"|(?P<uv>[^\s\"'`\\,;(){}\[\]<>|&]{1,256})(?P<after>[(\[]?))",
    re.IGNORECASE,
)


_ASSIGNMENTS: Final = frozenset({"=", ":=", "=>", ":"})


def _keyword_kind(key: str) -> str:
    k = key.lower()
    if "pass" in k or "pwd" in k or "contrase" in k:
        return "password"
    if "token" in k:
        return "token"
    if "secret" in k:
        return "secret"
    return "api-key"


_FORMAT_OR_NUMBER: Final = re.compile(
    r"%[-+ #0-9.]*[sdrxf]|\{[0-9]*\}|[-+]?(?:0[xob][0-9a-fA-F_]{1,16}|[0-9][0-9_.eE]*)[jlLuU]?"
)


def plausible(value: str) -> bool:
    """Not a stand-in for a secret: a template (`${TOKEN}`, `<token>`, `{token}`), a variable (`$TOKEN`), an
    elided example (`sk-…`), a format string, a number, a mask (`****`) or a word such as "token" or "null"."""
    if not value or value.lower() in _NOT_SECRETS or value.startswith(_PLACEHOLDER_START):
        return False
    if is_templated_secret(value) or is_prefixed_with_dollar_sign(value) or "…" in value or "..." in value:
        return False
    if _FORMAT_OR_NUMBER.search(value) and (_FORMAT_OR_NUMBER.fullmatch(value) or "%" in value or "{" in value):
        return False
    return not set(value) <= set("*xX.#-_")


def looks_secret(value: str) -> bool:
    """What a password or key looks like: letters with digits or symbols. A word ("required", "Bearer",
    `ExtractAuthToken`), a number (`max_tokens: 1024`) or a stand-in (see `plausible`) is not one."""
    if len(value) < 4 or not plausible(value) or is_sequential_string(value):
        return False
    if not any(c.isalpha() for c in value):
        return False
    return _has_digit(value) or any(not c.isalnum() and c not in "-_." for c in value)


def _keyword_locate(text: str, m: re.Match[str]) -> tuple[int, int, str] | None:
    key = m.group("key")
    if _KEY_NOT_SECRET.search(key):
        return None
    group = "qv" if m.group("q") is not None else "uv"
    value = m.group(group)
    if group == "uv":
        if m.group("op") not in _ASSIGNMENTS:
            return None  # `if token != current_token:`: a comparison counts only with a quoted literal
        if m.group("after") or (_IDENTIFIER_CHAIN.fullmatch(value) and not _has_digit(value)):
            return None  # a call, an index, a name or an attribute: an indirect reference, not a literal
        if m.group("op") == ":" and value.lower().rstrip("?") in _NOT_SECRETS:
            return None  # a type annotation
    if len(value) == 36 and is_potential_uuid(value):
        return None  # an id
    if not looks_secret(value):
        return None
    return m.start(group), m.end(group), _keyword_kind(key)


# -- the rule set ------------------------------------------------------------------------------------------------

_PEM_LABEL = r"[A-Z0-9 ]{0,32}PRIVATE KEY(?: BLOCK)?"
_NL = r"(?:\s|\\[rn])"  # a line break, also as a JSON escape inside a tool call's input
# A BEGIN line, optional headers (`Proc-Type: …`), a base64 body and the END line (missing when the text was cut
# short). A BEGIN line alone (prose about PEM files) is no key.
_PRIVATE_KEY_BLOCK = re.compile(
    rf"-----BEGIN {_PEM_LABEL}-----(?:{_NL}+[A-Za-z-]+:[^\r\n\\]*)*(?:{_NL}+[A-Za-z0-9+/=]{{16,}})"
    rf"(?:{_NL}*[A-Za-z0-9+/=]+)*{_NL}*(?:-----END {_PEM_LABEL}-----)?"
)


def _rules() -> tuple[Rule, ...]:
    c = re.compile
    ci = re.IGNORECASE
    # `markers` only where they pay: for case-insensitive patterns, anchored rules and rules that share one (the
    # `sk-` keys). A case-sensitive pattern that opens with a literal is searched as fast as a marker would be.
    return (
        # Whole blocks and URLs first: a key inside them is part of them.
        Rule("private-key", _PRIVATE_KEY_BLOCK),
        Rule("private-key", c(r"PuTTY-User-Key-File-\d:[^\n]*(?:\n[A-Za-z-]+:[^\n]*|\n[A-Za-z0-9+/=]+)*")),
        Rule("basic-auth", _ds(BasicAuthDetector), group=1, valid=lambda text, m: plausible(m.group(1))),
        Rule("slack-webhook", _ds(SlackDetector, 1), ("hooks.slack.com",)),
        # Provider API keys.
        Rule("anthropic-api-key", c(r"sk-ant-[A-Za-z0-9_-]{20,}"), ("sk-",), left=True),
        Rule("openai-api-key", c(r"sk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{20,}"), ("sk-",), left=True),
        Rule("openai-api-key", _ds(OpenAIDetector), ("sk-",), left=True, extend=True),
        Rule("api-key", c(r"sk-(?:[a-z0-9]{1,10}-){0,2}[A-Za-z0-9]{20,}" + _RIGHT), ("sk-",), left=True,
             valid=_sk_valid),
        Rule("google-api-key", c(r"AIza[0-9A-Za-z_-]{35}" + _RIGHT), left=True),
        # Cloud and VCS.
        Rule("aws-access-key", _ended(_ds(AWSKeyDetector)), left=True),
        Rule("aws-secret-key", _ds(AWSKeyDetector, 1), ("aws",), group=1),
        Rule("aws-secret-key", c(r"aws_?secret_?(?:access_?)?key[\"']?\s*[:=]\s*[\"']?([A-Za-z0-9/+]{40})"
                                 r"(?![A-Za-z0-9/+])", ci), ("aws_secret", "awssecret"), group=1, anchored=True),
        Rule("github-token", _ds(GitHubTokenDetector), left=True, extend=True),
        Rule("github-token", c(r"github_pat_[A-Za-z0-9_]{22,}"), left=True),
        *(Rule("gitlab-token", p, left=True) for p in GitLabTokenDetector.denylist),
        Rule("azure-storage-key", _ds(AzureStorageKeyDetector)),
        # SaaS tokens.
        Rule("slack-token", _ds(SlackDetector), ("xox",), left=True, extend=True),
        Rule("stripe-key", _ds(StripeDetector), ("k_live_",), left=True, extend=True),  # (?:r|s): no literal prefix
        *(Rule("twilio-key", _ended(p), left=True) for p in TwilioKeyDetector.denylist),
        Rule("sendgrid-key", _ds(SendGridDetector), left=True),
        *(Rule("pypi-token", p, left=True, extend=True) for p in PypiTokenDetector.denylist),
        Rule("npm-token", _ds(NpmDetector), group=1),
        Rule("npm-token", c(r"npm_[A-Za-z0-9]{36}" + _RIGHT), left=True),
        Rule("discord-token", c(r"\.[a-zA-Z0-9_-]{6}\.[a-zA-Z0-9_-]{27}" + _RIGHT),
             locate=_prefixed(DiscordBotTokenDetector, _URLSAFE, 24, 26)),
        Rule("telegram-token", c(r":[0-9A-Za-z_-]{35}" + _RIGHT),
             locate=_prefixed(TelegramBotTokenDetector, _DIGITS, 8, 10)),
        Rule("mailchimp-key", c(r"-us[0-9]{1,2}(?![0-9A-Za-z])"),
             locate=_prefixed(MailchimpDetector, _ALNUM_LOWER, 32, 32)),
        Rule("square-token", _ds(SquareOAuthDetector)),
        # detect-secrets' JWT pattern stops before the signature: extend over it.
        Rule("jwt", _ds(JwtTokenDetector), left=True, extend=True, valid=_jwt_valid),
        # Credentials in headers and this proxy's own tokens.
        Rule("aigw-token", c(r"aigw_[A-Za-z0-9_-]{40,}"), left=True,  # aigw_ + 43 random characters, not aigw_names
             valid=lambda text, m: any(ch.isdigit() or ch.isupper() for ch in m.group(0))),
        Rule("bearer-token", c(r"bearer\s+([A-Za-z0-9._~+/-]{16,}=*)", ci), ("bearer",), group=1, anchored=True,
             valid=lambda text, m: _word_start(text, m.start())),
        Rule("basic-auth", c(r"basic\s+(?P<b64>[A-Za-z0-9+/]{8,}={0,2})(?![A-Za-z0-9+/=])", ci), ("basic",),
             group="b64", anchored=True,
             valid=lambda text, m: _word_start(text, m.start()) and _basic_header_valid(text, m)),
        Rule("credential-header", c(r"(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?(?:(?:bearer|basic|token)\s+)?"
                                    r"([^\s\"'`\\,;}]{8,})", ci), ("authorization",), group=1, anchored=True,
             valid=lambda text, m: _word_start(text, m.start()) and plausible(m.group(1))),
        Rule("api-key", c(r"(?:x-api-key|x-goog-api-key|api-key|x-auth-token|private-token)[\"']?\s*[:=]\s*"
                          r"[\"']?(?:(?:bearer|token)\s+)?([^\s\"'`\\,;}]{8,})", ci),
             ("x-api-key", "x-goog-api-key", "api-key", "x-auth-token", "private-token"), group=1, anchored=True,
             valid=lambda text, m: _word_start(text, m.start()) and looks_secret(m.group(1))),
        # Last: a keyword assignment whose value no rule above recognised.
        Rule("keyword", _KEYWORD_RULE, KEYWORD_MARKERS, anchored=True, back=64, locate=_keyword_locate),
    )


BUILTIN_RULES: Final[tuple[Rule, ...]] = _rules()
KINDS: Final = tuple(dict.fromkeys([r.kind for r in BUILTIN_RULES if r.kind != "keyword"]
                                   + ["password", "token", "secret"]))
"""Every kind the built-in rules report (keyword assignments report password, token, secret or api-key)."""


def literal_prefix(pattern: re.Pattern[str]) -> str:
    """The text every match of `pattern` starts with ("" when it has none, or cannot be told): where it does not
    occur, the pattern cannot match."""
    if pattern.flags & re.IGNORECASE:
        return ""
    try:
        # The regex compiler's own parser (sre_parse); private, so typeshed has no stub for it.
        _parser: Any = importlib.import_module("re._parser")
        prefix = []
        for op, arg in _parser.parse(pattern.pattern, pattern.flags):
            if op is not _parser.LITERAL:
                break
            prefix.append(chr(arg))
        return "".join(prefix)
    except Exception:  # another interpreter's parser: no prefix, the rule always runs
        return ""


class Redactor:
    """The built-in rules, then `extra` rules (from the config), minus what an `allow` pattern matches."""

    def __init__(self, extra: Sequence[Rule] = (), allow: Iterable[re.Pattern[str]] = ()) -> None:
        self.rules: tuple[Rule, ...] = (*BUILTIN_RULES, *extra)
        self.allow: tuple[re.Pattern[str], ...] = tuple(allow)
        # What a rule needs in the text before its regex is worth running: one of its markers (in the lower-cased
        # text), else the literal its pattern opens with. Most texts hold none of them: a few substring searches
        # instead of a regex search per rule (`bench/redaction_bench.py`).
        self._gates: tuple[tuple[Rule, tuple[str, ...], str], ...] = tuple(
            (rule, rule.markers, "" if rule.markers else literal_prefix(rule.pattern)) for rule in self.rules
        )
        self._markers: tuple[str, ...] = tuple(dict.fromkeys(mk for rule in self.rules for mk in rule.markers))

    def find(self, text: str) -> list[Finding]:
        """The secrets in `text`, in order, overlapping ones merged."""
        if not text:
            return []
        lowered = text.lower() if self._markers else ""
        present = {mk for mk in self._markers if mk in lowered}
        found: list[Finding] = []
        for rule, markers, prefix in self._gates:
            if markers:
                if present.isdisjoint(markers):
                    continue
            elif prefix and prefix not in text:
                continue
            matches = self._anchored(rule, text, lowered) if rule.anchored else rule.pattern.finditer(text)
            for m in matches:
                finding = self._finding(rule, text, m)
                if finding is not None:
                    found.append(finding)
        return _merge(found)

    @staticmethod
    def _anchored(rule: Rule, text: str, lowered: str) -> Iterator[re.Match[str]]:
        if len(lowered) != len(text):  # a few characters change length when lower-cased: find markers in text
            marker_re = re.compile("|".join(map(re.escape, rule.markers)), re.IGNORECASE)
            positions = sorted(m.start() for m in marker_re.finditer(text))
        else:
            positions = sorted(i for marker in rule.markers for i in _occurrences(lowered, marker))
        done = -1  # matches never overlap; a start already tried is not tried again
        for i in positions:
            start = i
            if rule.back:
                floor = max(0, i - rule.back, done)
                while start > floor and text[start - 1] in _KEY_CHARS:
                    start -= 1
            if start <= done:
                continue
            m = rule.pattern.match(text, start)
            done = m.end() if m else start
            if m:
                yield m

    def _finding(self, rule: Rule, text: str, m: re.Match[str]) -> Finding | None:
        if rule.locate is not None:
            located = rule.locate(text, m)
            if located is None:
                return None
            start, end, kind = located
            kind = kind or rule.kind
        else:
            if rule.valid is not None and not rule.valid(text, m):
                return None
            start, end, kind = m.start(rule.group), m.end(rule.group), rule.kind
        if start < 0 or (rule.left and start > 0 and text[start - 1] in _TOKEN_CHARS):
            return None
        while start < end and text[start] in _TRIM:
            start += 1
        while end > start and text[end - 1] in _TRIM:
            end -= 1
        if rule.extend:
            while end < len(text) and text[end] in _TOKEN_CHARS:
                end += 1
        if end - start < 4 or text.startswith(_PLACEHOLDER_START, start):
            return None
        if self.allow:
            secret = text[start:end]
            if any(a.search(secret) for a in self.allow):
                return None
        return Finding(start, end, kind)

    def redact(self, text: str) -> Redacted:
        """`text` with each secret replaced by `[REDACTED:<kind>]`, and the count per kind."""
        findings = self.find(text)
        if not findings:
            return Redacted(text)
        out: list[str] = []
        counts: Counter[str] = Counter()
        pos = 0
        for f in findings:
            out.append(text[pos:f.start])
            out.append(PLACEHOLDER.format(kind=f.kind))
            counts[f.kind] += 1
            pos = f.end
        out.append(text[pos:])
        return Redacted("".join(out), counts)

    def kinds(self, text: str) -> Counter[str]:
        """The kinds of secret in `text` and how many of each (what block mode reports)."""
        return Counter(f.kind for f in self.find(text))


def _occurrences(haystack: str, needle: str) -> Iterator[int]:
    i = haystack.find(needle)
    while i >= 0:
        yield i
        i = haystack.find(needle, i + 1)


def _merge(found: list[Finding]) -> list[Finding]:
    """Sort by start; a finding overlapping the previous one extends it (every character of every finding is
    covered; the earlier, i.e. more specific, rule names it)."""
    if len(found) < 2:
        return found
    found.sort(key=lambda f: f.start)
    merged = [found[0]]
    for f in found[1:]:
        last = merged[-1]
        if f.start < last.end:
            if f.end > last.end:
                merged[-1] = Finding(last.start, f.end, last.kind)
        else:
            merged.append(f)
    return merged


def compile_extra_rule(name: str, regex: str, keywords: Sequence[str] = ()) -> Rule:
    """A rule from the config: `name` becomes the kind; the first group, if any, is the secret. Raises
    ValueError with the reason."""
    if not KIND_RE.match(name):
        raise ValueError(f"pattern name {name!r} must be lower-case words joined by '-' (e.g. 'corp-token')")
    try:
        pattern = re.compile(regex)
    except re.error as exc:
        raise ValueError(f"pattern {name!r}: invalid regex: {exc}") from None
    if pattern.match(""):
        raise ValueError(f"pattern {name!r}: the regex matches the empty string")
    return Rule(name, pattern, tuple(k.lower() for k in keywords), group=1 if pattern.groups else 0)


def compile_allow(regex: str) -> re.Pattern[str]:
    try:
        return re.compile(regex)
    except re.error as exc:
        raise ValueError(f"allow pattern {regex!r}: invalid regex: {exc}") from None
