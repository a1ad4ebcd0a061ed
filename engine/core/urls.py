"""URLs as sources: what may be shown of one, and a name that is unique to it.

Why one module: a stream or file URL may carry a password (`http://user:pw@host/...`) or a token in its query
(`?token=...`, `?sig=...`). Every name, log line and report derived from a source goes through `redact`, so a
secret never reaches a folder name, summary.csv/json, index.html, a progress line or the log; and `url_key`
gives two URLs that differ anywhere (query included) two different names.
"""
from __future__ import annotations

import hashlib
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

#: schemes the engine reads as URLs (OpenCV / FFmpeg open them)
URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.I)
#: query keys whose values are secrets (case-insensitive substrings)
SECRET_KEYS = ("token", "key", "secret", "password", "passwd", "pwd", "auth", "sig", "signature", "credential", "session")
REDACTED = "***"


def is_url(text: str) -> bool:
    return bool(URL.match(str(text)))


def redact(text: str) -> str:
    """`text` with userinfo and secret query values replaced by ***; anything that is not a URL unchanged."""
    s = str(text)
    if not is_url(s):
        return s
    try:
        parts = urlsplit(s)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode([(k, REDACTED if any(w in k.lower() for w in SECRET_KEYS) else v) for k, v in pairs], safe="*")
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:  # not parseable: show only the scheme
        return s.split("://", 1)[0] + "://" + REDACTED


def url_key(text: str, length: int = 8) -> str:
    """A short hash of the whole URL (secrets included, so two users' streams do not share a folder): the part
    of an output name that keeps two URLs differing only in their query apart."""
    return hashlib.sha256(str(text).encode()).hexdigest()[:length]
