"""ConditionalTokens position ids against a Polygon mainnet test vector."""

from __future__ import annotations

from engine.analytics.positions import (
    ZERO32,
    collection_id,
    condition_id,
    outcome_token_ids,
    position_id,
)

USDC_E = "0x2791Bca1f2de4661ED88A30C99A7a9449Aa84174"
CONDITION = "0x2e6af11e4b853b05ba7135239b21d77e808889b6ce1e735de856c94c4e5b5fce"
TOKEN0 = 8851848546962572193739008211889046036776198486765606333032192644001246174440
TOKEN1 = 10181859819235412241349111952383458602722012323104397550162049365057126390549


def test_mainnet_vector() -> None:
    assert outcome_token_ids(USDC_E, CONDITION, 2) == [TOKEN0, TOKEN1]


def test_index_sets_and_building_blocks() -> None:
    c0 = collection_id(ZERO32, CONDITION, 1)
    c1 = collection_id(ZERO32, CONDITION, 2)
    assert len(c0) == 32 and c0 != c1
    assert position_id(USDC_E, c0) == TOKEN0
    assert position_id(USDC_E.lower(), c1) == TOKEN1
    # bytes and hex inputs agree
    assert collection_id(ZERO32, bytes.fromhex(CONDITION[2:]), 2) == c1


def test_condition_id_is_keccak_of_packed_fields() -> None:
    from eth_hash.auto import keccak

    oracle = "0x6a9d222616c90fca5754cd1333cfd9b7fb6a4f74"
    qid = "0x" + "ab" * 32
    expected = keccak(
        bytes.fromhex(oracle[2:]) + bytes.fromhex("ab" * 32) + (2).to_bytes(32, "big")
    )
    assert condition_id(oracle, qid, 2) == "0x" + expected.hex()
    assert condition_id(oracle, bytes.fromhex("ab" * 32), 3) != condition_id(oracle, qid, 2)


def test_nested_collection_is_order_independent() -> None:
    # Combining A then B equals combining B then A (elliptic-curve addition commutes).
    other = "0x" + "11" * 32
    a = collection_id(ZERO32, CONDITION, 1)
    b = collection_id(ZERO32, other, 2)
    assert collection_id(a, other, 2) == collection_id(b, CONDITION, 1)
