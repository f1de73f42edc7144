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
