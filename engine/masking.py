"""Keep API keys and passwords out of everything an operator sees: logs, errors, the TUI, `ctl`.

`mask_url` hides the secret-bearing parts of one URL: userinfo, query, fragment, and every path
segment or host label that looks like a credential; `mask_secrets` scrubs known secrets and any
URL out of free text.

What looks like a credential (`_looks_like_key`). A path segment is one when it is longer than
`MAX_PLAIN_SEGMENT` (20) characters. Any path segment or host label of at least `MIN_KEY_LEN` (8)
characters is one when

* it contains a digit, an upper-case and a lower-case letter (base62 keys: ``abcdEFGH12345678``), or
* one of its words (the runs of letters and digits between ``-``, ``_``, ``.``, ...) is
  - a hex string of >= 8 characters with a digit and a letter, or of >= 12 digits
    (Infura, Ankr, QuickNode, Chainstack, Grove keys: ``0123456789abcdef``),
  - random-looking: >= 8 characters switching between letters and digits at least 3 times
    (``k3j5h2l9``), unlike a word with a version or a number (``dataseed1``, ``mainnet2024``),
  - longer than 20 characters (host labels; a random token has no dashes).

So ``v2``, ``rpc``, ``ext``, ``bor``, ``polygon-mainnet``, ``eth-mainnet``, ``base-sepolia``,
``arb1``, ``bsc-dataseed1``, ``erigon2``, ``nd-123-456-789`` stay readable. Host labels are only
checked left of the registered domain (the last two labels stay: ``alchemy.com``, ``infura.io``),
never in IP addresses, ``localhost`` or IDNA (``xn--``) labels; the port is always kept.
A short key made of one lower-case word and a number (``rpcnode12``) cannot be told from a
readable name and is shown; so are QuickNode's random-word endpoint names (``wild-sleek-pond``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

MASK = "***"
# Path segments longer than this are always treated as API keys (Alchemy, Infura, QuickNode, ...).
MAX_PLAIN_SEGMENT = 20
# Shorter segments and labels are never treated as API keys ("v2", "rpc", "arb1", "erigon2").
MIN_KEY_LEN = 8

# A URL inside free text ends at whitespace, quotes, brackets or a comma/semicolon (URL lists are
# comma-separated); trailing sentence punctuation is not part of it.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>(){},;]+")
_TRAILING_PUNCT = ".:!?]"
_WORD_SEP = re.compile(r"[^A-Za-z0-9]+")
_HEX = re.compile(r"[0-9A-Fa-f]+")
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")


def mask_url(url: str) -> str:
    """Return `url` with userinfo, query, fragment and credential-looking path segments and host
    labels replaced by ***.

    >>> mask_url("https://polygon-mainnet.g.alchemy.com/v2/AbCdEf0123456789AbCdEf0123")
    'https://polygon-mainnet.g.alchemy.com/v2/***'
    >>> mask_url("https://rpc.ankr.com/polygon/0123456789abcdef")
    'https://rpc.ankr.com/polygon/***'
    >>> mask_url("https://abcdef0123456789abcdef.polygon-mainnet.quiknode.pro/xyz/")
    'https://***.polygon-mainnet.quiknode.pro/xyz/'
    >>> mask_url("https://bsc-dataseed1.binance.org/v1/erigon2")
    'https://bsc-dataseed1.binance.org/v1/erigon2'
    >>> mask_url("https://user:pw@host:8443/?apikey=xyz")
    'https://***@host:8443/?***'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return _mask_unparseable(url)
    if not parts.scheme or not parts.netloc:
        # Not an absolute URL; still hide anything after '?' or '#' and key-like segments.
        return _mask_unparseable(url)
    out = f"{parts.scheme}://{_mask_netloc(parts.netloc)}{_mask_path(parts.path)}"
    if parts.query:
        out += "?" + MASK
    if parts.fragment:
        out += "#" + MASK
    return out


def _looks_like_key(token: str, *, host_label: bool = False) -> bool:
    """True when a path segment (or, with `host_label`, a host name label) looks like a credential.

    >>> [t for t in ("v2", "polygon-mainnet", "dataseed1", "abcdEFGH1234") if _looks_like_key(t)]
    ['abcdEFGH1234']
    """
    if not host_label and len(token) > MAX_PLAIN_SEGMENT:
        return True
    if len(token) < MIN_KEY_LEN or token == MASK:
        return False
    if host_label and token.lower().startswith("xn--"):
        return False  # IDNA (punycode) label: encoded letters, not a key
    if (
        any(c.isdigit() for c in token)
        and any(c.isupper() for c in token)
        and any(c.islower() for c in token)
    ):
        return True
    return any(_word_looks_like_key(word) for word in _WORD_SEP.split(token))


def _word_looks_like_key(word: str) -> bool:
    """One run of ASCII letters and digits: hex, random-looking or very long."""
    if len(word) > MAX_PLAIN_SEGMENT:
        return True
    if len(word) < MIN_KEY_LEN:
        return False
    has_digit = any(c.isdigit() for c in word)
    if _HEX.fullmatch(word) and has_digit and (len(word) >= 12 or not word.isdigit()):
        return True
    switches = sum(a.isdigit() != b.isdigit() for a, b in zip(word, word[1:], strict=False))
    return switches >= 3


def _mask_path(path: str) -> str:
    return "/".join(MASK if _looks_like_key(seg) else seg for seg in path.split("/"))


def _mask_netloc(netloc: str) -> str:
    """Mask the userinfo and any key-like host label of `[userinfo@]host[:port]`."""
    userinfo, at, hostport = netloc.rpartition("@")
    return (MASK + "@" if at else "") + _mask_hostport(hostport)


def _mask_hostport(hostport: str) -> str:
    if hostport.startswith("["):  # IPv6 literal
        return hostport
    host, colon, port = hostport.partition(":")
    return _mask_host(host) + colon + port


def _key_labels(host: str) -> list[int]:
    """Positions of the labels of `host` that look like keys.

    Only the labels left of the registered domain (e.g. "alchemy.com") can hold a key, and never
    in an IPv4 address."""
    bare = host.rstrip(".")
    labels = bare.split(".")
    if len(labels) < 3 or _IPV4.fullmatch(bare):
        return []
    return [i for i in range(len(labels) - 2) if _looks_like_key(labels[i], host_label=True)]


def _mask_host(host: str) -> str:
    keys = _key_labels(host)
    if not keys:
        return host
    labels = host.rstrip(".").split(".")
    shown = [MASK if i in keys else label for i, label in enumerate(labels)]
    return ".".join(shown) + ("." if host.endswith(".") else "")


def _host_key_labels(hostport: str) -> list[str]:
    """The host labels that `_mask_hostport` hides."""
    if hostport.startswith("["):  # IPv6 literal
        return []
    host = hostport.partition(":")[0]
    labels = host.rstrip(".").split(".")
    return [labels[i] for i in _key_labels(host)]


def _mask_unparseable(text: str) -> str:
    """Best effort for strings that are not absolute URLs (e.g. "host/v2/KEY" without a scheme)."""
    scheme, sep, rest = text.partition("://")
    if not (sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme)):
        scheme, sep, rest = "", "", text
    rest, mark, tail = _split_query(rest)
    authority, slash, path = rest.partition("/")
    authority = _mask_netloc(authority)
    if not sep and "." not in authority and _looks_like_key(authority):
        authority = MASK  # a bare token, not a host name
    out = f"{scheme}{sep}{authority}{slash}{_mask_path(path) if slash else ''}"
    return out + (mark + MASK if tail else mark)


def _split_query(text: str) -> tuple[str, str, str]:
    """Split at the first '?' or '#': (before, the mark, after)."""
    m = re.search(r"[?#]", text)
    if not m:
        return text, "", ""
    return text[: m.start()], m.group(0), text[m.end() :]


def mask_secrets(text: str, secrets: Iterable[str]) -> str:
    """Return `text` with every secret hidden.

    Each non-empty secret is replaced: a URL secret by its `mask_url` form (and its userinfo, query,
    key-like path segments and host labels wherever they appear on their own), any other secret (a
    password) by ***. Finally every URL left in the text is passed through `mask_url`, so a URL that
    was never registered as a secret still shows no API key.

    >>> mask_secrets("429 from https://rpc.example.com/rpc/abcdEFGH12345678.", [])
    '429 from https://rpc.example.com/rpc/***.'
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
    # Longest first, so a URL is replaced whole before any of its pieces. Case-insensitive: some
    # providers quote a request back lower-cased ("too many requests for /v3/abcdef...").
    for secret in sorted(replacements, key=len, reverse=True):
        if secret != replacements[secret] and secret.lower() in text.lower():
            text = re.sub(re.escape(secret), replacements[secret], text, flags=re.IGNORECASE)
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
    pieces = [seg for seg in parts.path.split("/") if _looks_like_key(seg)]
    userinfo, at, hostport = parts.netloc.rpartition("@")
    pieces.extend(_host_key_labels(hostport))
    if at:
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
