"""Keep secrets out of logs and HTTP answers.

Notifier URLs carry credentials (`https://user:pass@host/...`,
`?token=...`), webhook headers and SMTP passwords are secrets, and error
messages from urllib, smtplib and the config loader repeat URLs. Everything
the server logs or serves about such things goes through `redact_url` (one
URL) or `redact_text` (free text: every URL found in it, plus any known secret
strings), which replace the secret parts with `***`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit, urlunsplit

MASK = "***"

#: A URL in free text: scheme://, then anything up to whitespace, a quote or an angle bracket,
#: not ending in punctuation that more likely belongs to the sentence (`url: reason`, `(url)`).
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]*[^\s'\"<>.,:;)\]]")
#: userinfo@ in a URL (everything between :// and the last @ before the path).
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://)[^/?#]*@")
#: name=value in a query string.
_QUERY_VALUE = re.compile(r"([^&;=]*)=([^&;]*)")
#: Known secrets shorter than this are not replaced in free text (they would match everywhere).
MIN_SECRET = 4


def redact_url(url: str) -> str:
    """`url` with its userinfo replaced by `***` and every query value by `***`; the rest unchanged.

    `https://user:pass@host/p?token=abc&x=1` -> `https://***@host/p?token=***&x=***`.
    Text that does not parse as a URL is returned with the same substitutions done textually.
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced [ in the host: redact textually
        return _redact_query(_USERINFO.sub(rf"\1{MASK}@", url))
    if not parts.scheme or not parts.netloc:
        return _redact_query(_USERINFO.sub(rf"\1{MASK}@", url))
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    return urlunsplit((parts.scheme, netloc, parts.path, _query(parts.query), parts.fragment))


def _query(query: str) -> str:
    return _QUERY_VALUE.sub(lambda m: f"{m.group(1)}={MASK}" if m.group(2) else m.group(0), query)


def _redact_query(text: str) -> str:
    base, sep, query = text.partition("?")
    return base + sep + _query(query) if sep else text


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every URL in it redacted (`redact_url`) and each of `secrets` replaced by `***`.

    Secrets are replaced first, longest first, so a secret inside a URL goes
    too; secrets shorter than MIN_SECRET characters are left (they would
    mangle ordinary words) -- callers log those nowhere anyway.
    """
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_SECRET}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    if "://" not in text:
        return text
    return _URL.sub(lambda m: redact_url(m.group(0)), text)


def url_secrets(url: str) -> list[str]:
    """The password of `url`'s userinfo (as written and percent-decoded), for `redact_text`.

    Query values are not listed: they are redacted wherever the URL appears,
    and short ones (`format=json`) would mangle ordinary words elsewhere.
    """
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return []
    userinfo = netloc.rpartition("@")[0]
    password = userinfo.partition(":")[2]
    return [s for s in {userinfo, password, unquote(password)} if s]


__all__ = ["MASK", "redact_text", "redact_url", "url_secrets"]
