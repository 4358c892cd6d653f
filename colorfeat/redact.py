"""Secrets in URLs: shown and stored only as `***`, kept in memory for the requests themselves.

A URL's userinfo (`https://user:token@host/`) and the values of secret query keys (`?token=...`,
`X-Amz-Signature=...`, see `is_secret_key`) are secrets. `redact_url` masks them in anything that
is shown or stored: messages, log lines, markers, store attrs, Prefect parameters and artifacts.
`conceal` masks a URL the same way and remembers the original in this process's environment, which
child processes inherit (Prefect runners, Dask workers) but nothing writes to disk; `reveal` turns
the masked form back into the original where the requests are made.
"""

from __future__ import annotations

import json
import os
import re
from urllib.parse import unquote, urlsplit, urlunsplit

MASK = "***"
SECRETS_ENV = "COLORFEAT_URL_SECRETS"  # {masked URL: original URL}, JSON, this process only
# A query key is secret when its lower-cased name is one of these or contains one of the parts.
SECRET_QUERY_KEYS = frozenset({"key", "sig", "auth", "code", "pass", "pwd", "session"})
SECRET_QUERY_PARTS = ("token", "secret", "passw", "signature", "credential", "apikey", "api_key")
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")


def is_secret_key(name: str) -> bool:
    """Whether a query key names a secret (`token`, `X-Amz-Signature`, `api_key`, `sig`, ...)."""
    key = unquote(name).lower()
    return key in SECRET_QUERY_KEYS or any(part in key for part in SECRET_QUERY_PARTS)


def _redact_query(query: str) -> str:
    pairs = []
    for pair in query.split("&"):
        name, eq, _ = pair.partition("=")
        pairs.append(f"{name}={MASK}" if eq and is_secret_key(name) else pair)
    return "&".join(pairs)


def redact_url(url: str) -> str:
    """`url` with its userinfo and the values of secret query keys replaced by `***`."""
    try:
        parts = urlsplit(url)
    except ValueError:  # not parseable (a bad IPv6 host): mask everything between // and the host
        return re.sub(r"(?<=//)[^/?#]*@", f"{MASK}@", url)
    if not parts.netloc and not parts.query:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    query = _redact_query(parts.query) if parts.query else parts.query
    if (netloc, query) == (parts.netloc, parts.query):
        return url  # unchanged, byte for byte
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def redact_text(text: str) -> str:
    """`text` with every URL in it redacted (for messages that quote URLs or server replies)."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


def has_secrets(url: str) -> bool:
    """Whether `url` carries credentials that redaction would hide."""
    return redact_url(url) != url


def _known() -> dict[str, str]:
    try:
        table = json.loads(os.environ.get(SECRETS_ENV, "{}"))
    except ValueError:
        return {}
    return table if isinstance(table, dict) else {}


def conceal(url: str) -> str:
    """The redacted url, whose original `reveal` gives back in this process and its children."""
    masked = redact_url(url)
    if masked != url:
        os.environ[SECRETS_ENV] = json.dumps({**_known(), masked: url})
    return masked


def reveal(url: str) -> str:
    """The original of a concealed url, or url itself (secrets left as given, or unknown here)."""
    return _known().get(url, url) if MASK in url else url
