"""Keep API keys and passwords out of everything an operator sees: logs, errors, the TUI, `ctl`.

`mask_url` hides the secret-bearing parts of one URL (userinfo, query, fragment, long path
segments such as provider API keys); `mask_secrets` scrubs known secrets and any URL out of
free text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

MASK = "***"
# Path segments longer than this are treated as API keys (Alchemy, Infura, QuickNode, ...).
MAX_PLAIN_SEGMENT = 20

# A URL inside free text ends at whitespace, quotes, brackets or a comma/semicolon (URL lists are
# comma-separated); trailing sentence punctuation is not part of it.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>(){},;]+")
_TRAILING_PUNCT = ".:!?]"


def mask_url(url: str) -> str:
    """Return `url` with userinfo, query, fragment and path segments > 20 chars replaced by ***.

    >>> mask_url("https://polygon-mainnet.g.alchemy.com/v2/AbCdEf0123456789AbCdEf0123")
    'https://polygon-mainnet.g.alchemy.com/v2/***'
    >>> mask_url("https://user:pw@host:8443/?apikey=xyz")
    'https://***@host:8443/?***'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return _mask_unparseable(url)
    if not parts.scheme or not parts.netloc:
        # Not an absolute URL; still hide anything after '?' or '#' and long segments.
        return _mask_unparseable(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = MASK + "@" + netloc.rpartition("@")[2]
    path = "/".join(
        MASK if len(segment) > MAX_PLAIN_SEGMENT else segment for segment in parts.path.split("/")
    )
    out = f"{parts.scheme}://{netloc}{path}"
    if parts.query:
        out += "?" + MASK
    if parts.fragment:
        out += "#" + MASK
    return out


def _mask_unparseable(text: str) -> str:
    """Best effort for strings that are not absolute URLs (e.g. "host/v2/KEY" without a scheme)."""
    scheme, sep, rest = text.partition("://")
    if not (sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme)):
        scheme, sep, rest = "", "", text
    rest, mark, tail = _split_query(rest)
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = MASK + "@" + authority.rpartition("@")[2]
    segments = [MASK if len(seg) > MAX_PLAIN_SEGMENT else seg for seg in path.split("/")]
    if len(authority) > MAX_PLAIN_SEGMENT and not sep and "." not in authority:
        authority = MASK  # a bare token, not a host name
    out = f"{scheme}{sep}{authority}{slash}{'/'.join(segments) if slash else ''}"
    return out + (mark + MASK if tail else mark)


def _split_query(text: str) -> tuple[str, str, str]:
    """Split at the first '?' or '#': (before, the mark, after)."""
    m = re.search(r"[?#]", text)
    if not m:
        return text, "", ""
    return text[: m.start()], m.group(0), text[m.end() :]


def mask_secrets(text: str, secrets: Iterable[str]) -> str:
    """Return `text` with every secret hidden.

    Each non-empty secret is replaced: a URL secret by its `mask_url` form (and its userinfo, query
    and long path segments wherever they appear on their own), any other secret (a password) by ***.
    Finally every URL left in the text is passed through `mask_url`, so a URL that was never
    registered as a secret still shows no API key.
    """
    replacements: dict[str, str] = {}
    for secret in secrets:
        if not secret:
            continue
        if "://" in secret:
            replacements[secret] = mask_url(secret)
            for piece in _secret_pieces(secret):
                replacements.setdefault(piece, MASK)
        else:
            replacements[secret] = MASK
    # Longest first, so a URL is replaced whole before any of its pieces.
    for secret in sorted(replacements, key=len, reverse=True):
        if secret != replacements[secret]:
            text = text.replace(secret, replacements[secret])
    return _URL_IN_TEXT.sub(_mask_match, text)


def _mask_match(match: re.Match[str]) -> str:
    found = match.group(0)
    url = found.rstrip(_TRAILING_PUNCT)
    if url.count("[") > url.count("]"):  # keep the closing bracket of an IPv6 host
        url = found[: len(url) + 1]
    return mask_url(url) + found[len(url) :]


def _secret_pieces(url: str) -> list[str]:
    """The parts of a URL that `mask_url` hides, long enough to replace safely in free text."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    pieces = [seg for seg in parts.path.split("/") if len(seg) > MAX_PLAIN_SEGMENT]
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        pieces.append(userinfo)
        pieces.extend(userinfo.split(":", 1)[1:])
    if parts.query:
        pieces.append(parts.query)
        pieces.extend(kv.partition("=")[2] for kv in parts.query.split("&"))
    if parts.fragment:
        pieces.append(parts.fragment)
    # Very short pieces ("pw", "1") would mangle ordinary words; the whole-URL and URL-pattern
    # passes already cover them where they appear inside a URL.
    return [p for p in pieces if len(p) >= 6]
