"""Unit tests for engine.masking: API keys, userinfo and passwords never reach operator output."""

from __future__ import annotations

import pytest

from engine.masking import mask_secrets, mask_url

ALCHEMY = "https://polygon-mainnet.g.alchemy.com/v2/AbCdEf0123456789AbCdEf0123"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (ALCHEMY, "https://polygon-mainnet.g.alchemy.com/v2/***"),
        ("https://user:pw@host:8443/?apikey=xyz", "https://***@host:8443/?***"),
        ("http://127.0.0.1:8545", "http://127.0.0.1:8545"),
        ("http://localhost:8545/", "http://localhost:8545/"),
        ("http://[::1]:8545/rpc", "http://[::1]:8545/rpc"),
        ("https://rpc.example/a/b?x=1#frag", "https://rpc.example/a/b?***#***"),
        ("https://rpc.example/short/" + "k" * 21 + "/tail", "https://rpc.example/short/***/tail"),
        ("https://rpc.example/" + "k" * 20, "https://rpc.example/" + "k" * 20),
        ("wss://token@ws.example/ws", "wss://***@ws.example/ws"),
        # not absolute URLs: still no key, no userinfo, no query
        ("polygon.example/v2/" + "k" * 32, "polygon.example/v2/***"),
        ("user:pw@host:8123", "***@host:8123"),
        ("host/?apikey=1", "host/?***"),
        ("", ""),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_mask_url_is_idempotent() -> None:
    for url in (ALCHEMY, "https://user:pw@host:8443/?apikey=xyz"):
        assert mask_url(mask_url(url)) == mask_url(url)


def test_mask_secrets_replaces_registered_url_and_its_key_alone() -> None:
    text = f"POST {ALCHEMY} failed: 429 (key AbCdEf0123456789AbCdEf0123 throttled)"
    out = mask_secrets(text, [ALCHEMY])
    assert "AbCdEf0123456789AbCdEf0123" not in out
    assert (
        out == "POST https://polygon-mainnet.g.alchemy.com/v2/*** failed: 429 (key *** throttled)"
    )


def test_mask_secrets_password_and_empty_secrets() -> None:
    out = mask_secrets("auth failed for default:hunter22", ["hunter22", ""])
    assert out == "auth failed for default:***"


def test_mask_secrets_masks_unregistered_urls_in_text() -> None:
    text = f"urls={ALCHEMY},https://u:p@h/?k=v. done"
    out = mask_secrets(text, [])
    assert out == "urls=https://polygon-mainnet.g.alchemy.com/v2/***,https://***@h/?***. done"


def test_mask_secrets_userinfo_and_query_values() -> None:
    url = "https://alice:s3cretpass@node.example:8443/?apikey=zzzzzzzz"
    text = f"connect {url}; retry with apikey=zzzzzzzz as alice:s3cretpass"
    out = mask_secrets(text, [url])
    assert "s3cretpass" not in out and "zzzzzzzz" not in out
    assert out.startswith("connect https://***@node.example:8443/?***;")


def test_mask_secrets_keeps_plain_text_and_ipv6() -> None:
    text = "node http://[::1]:8545 answered (block 12)."
    assert mask_secrets(text, []) == text


# ---------------------------------------------------------------- short keys and keys in host names

HEX16 = "0123456789abcdef"
HEX32 = HEX16 * 2


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        # base62 key (digits, upper and lower case) of 16 chars
        ("https://rpc.example.com/rpc/abcdEFGH12345678", "https://rpc.example.com/rpc/***"),
        # Ankr-style 16-hex key after the chain name
        (f"https://rpc.ankr.com/polygon/{HEX16}", "https://rpc.ankr.com/polygon/***"),
        # QuickNode-style hex key with a trailing slash
        (f"https://x.matic.quiknode.pro/{HEX32}/", "https://x.matic.quiknode.pro/***/"),
        (f"https://x.matic.quiknode.pro/{HEX16}/", "https://x.matic.quiknode.pro/***/"),
        # Grove/Pocket-style 8-hex app id, Chainstack/GetBlock-style keys
        (
            "https://poly-mainnet.rpc.grove.city/v1/1a2b3c4d",
            "https://poly-mainnet.rpc.grove.city/v1/***",
        ),
        (f"https://nd-123-456-789.p2pify.com/{HEX16}", "https://nd-123-456-789.p2pify.com/***"),
        ("https://go.getblock.io/k3j5h2l9x8q1/", "https://go.getblock.io/***/"),
        # a key in the middle of the path, and a key made of dash-separated words
        (f"https://api.zan.top/node/v1/{HEX16}/polygon", "https://api.zan.top/node/v1/***/polygon"),
        ("https://rpc.example.com/k3Y-ab_C9xZ/ws", "https://rpc.example.com/***/ws"),
        # a long all-digit id
        ("https://rpc.example.com/123456789012", "https://rpc.example.com/***"),
    ],
)
def test_mask_url_short_path_keys(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (
            "https://abcdef0123456789abcdef.polygon-mainnet.quiknode.pro/xyz/",
            "https://***.polygon-mainnet.quiknode.pro/xyz/",
        ),
        ("https://my-key-1234abcd5678.rpc.example.com", "https://***.rpc.example.com"),
        (f"https://{HEX16}.rpc.example.com:8443/v1", "https://***.rpc.example.com:8443/v1"),
        ("https://AbCd1234EfGh.eth.example.io/", "https://***.eth.example.io/"),
        # key in host and in path; userinfo too
        (
            f"wss://u:pw@{HEX16}.ws.example.com/ws/{HEX32}",
            "wss://***@***.ws.example.com/ws/***",
        ),
        # a key label below another label, fully qualified host name
        (f"https://node.{HEX16}.example.com./", "https://node.***.example.com./"),
    ],
)
def test_mask_url_keys_in_host_names(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@pytest.mark.parametrize(
    "url",
    [
        "https://polygon-mainnet.g.alchemy.com/v2/",
        "https://eth-mainnet.g.alchemy.com/v2",
        "https://base-sepolia.g.alchemy.com/v2/",
        "https://polygon-mainnet.infura.io/v3/",
        "https://mainnet.infura.io/ws/v3",
        "https://rpc.ankr.com/polygon",
        "https://polygon-rpc.com",
        "https://polygon-bor-rpc.publicnode.com",
        "https://bsc-dataseed1.binance.org/",
        "https://arb1.arbitrum.io/rpc",
        "https://nd-123-456-789.p2pify.com/",
        "https://rpc-mainnet.maticvigil.com/v1/",
        "https://1rpc.io/matic",
        "https://polygon.llamarpc.com/rpc/v1/mainnet2024/chain137/eth/api",
        "http://erigon2.internal.lan:8545/ext/bor",
        "http://127.0.0.1:8545",
        "http://10.0.0.12:8545/http",
        "ws://localhost:8546/ws",
        "http://[2001:db8::1]:8545/rpc",
        "https://xn--80ak6aa92e.example.com/",
        # a registered domain is never masked, however it looks
        f"https://{HEX16}.com/",
        # already masked
        "https://***.polygon-mainnet.quiknode.pro/***/",
    ],
)
def test_mask_url_keeps_ordinary_urls_readable(url: str) -> None:
    assert mask_url(url) == url


def test_mask_url_new_rules_are_idempotent() -> None:
    for url in (
        f"https://{HEX16}.rpc.example.com/rpc/abcdEFGH12345678",
        f"https://rpc.ankr.com/polygon/{HEX16}",
    ):
        assert mask_url(mask_url(url)) == mask_url(url)


def test_mask_url_unparseable_short_keys() -> None:
    assert mask_url(f"rpc.ankr.com/polygon/{HEX16}") == "rpc.ankr.com/polygon/***"
    assert mask_url("abcdEFGH12345678") == "***"
    assert mask_url("localhost:8545") == "localhost:8545"


def test_mask_secrets_masks_short_and_host_keys_in_free_text() -> None:
    text = (
        f"429 from https://rpc.ankr.com/polygon/{HEX16}, "
        "retry https://rpc.example.com/rpc/abcdEFGH12345678; "
        f"then wss://{HEX16}.polygon-mainnet.quiknode.pro/xyz/. "
        "fallback http://127.0.0.1:8545/ext/bor (bsc-dataseed1, arb1, erigon2)"
    )
    out = mask_secrets(text, [])
    assert out == (
        "429 from https://rpc.ankr.com/polygon/***, "
        "retry https://rpc.example.com/rpc/***; "
        "then wss://***.polygon-mainnet.quiknode.pro/xyz/. "
        "fallback http://127.0.0.1:8545/ext/bor (bsc-dataseed1, arb1, erigon2)"
    )


def test_mask_secrets_registered_url_hides_short_key_and_host_label_alone() -> None:
    url = "https://my-key-1234abcd5678.rpc.example.com/rpc/abcdEFGH12345678"
    text = f"GET {url}: 401 (key abcdEFGH12345678, node my-key-1234abcd5678)"
    out = mask_secrets(text, [url])
    assert out == "GET https://***.rpc.example.com/rpc/***: 401 (key ***, node ***)"


def test_module_doctests() -> None:
    import doctest

    import engine.masking

    assert doctest.testmod(engine.masking).failed == 0
