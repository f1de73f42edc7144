"""Event signatures and topic0 values the engine decodes, checked against keccak at start-up."""

from __future__ import annotations

SIGNATURES: dict[str, str] = {
    "Transfer": "Transfer(address,address,uint256)",
    "TransferSingle": "TransferSingle(address,address,address,uint256,uint256)",
    "TransferBatch": "TransferBatch(address,address,address,uint256[],uint256[])",
    "ConditionResolution": "ConditionResolution(bytes32,address,bytes32,uint256,uint256[])",
    "TokenRegistered": "TokenRegistered(uint256,uint256,bytes32)",
}

TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
TRANSFER_SINGLE_TOPIC = "0xc3d58168c5ae7397731d063d5bbf3d657854427343f4c083240f7aacaa2d0f62"
TRANSFER_BATCH_TOPIC = "0x4a39dc06d4c0dbc64b70af90fd698a233a518aa5d07e595d983b8c0526c8f7fb"
CONDITION_RESOLUTION_TOPIC = "0xb44d84d3289691f71497564b85d4233648d9dbae8cbdbb4329f301c3a0185894"
TOKEN_REGISTERED_TOPIC = "0xbc9a2432e8aeb48327246cddd6e872ef452812b4243c04e6bfb786a2cd8faf0d"

TOPICS: dict[str, str] = {
    "Transfer": TRANSFER_TOPIC,
    "TransferSingle": TRANSFER_SINGLE_TOPIC,
    "TransferBatch": TRANSFER_BATCH_TOPIC,
    "ConditionResolution": CONDITION_RESOLUTION_TOPIC,
    "TokenRegistered": TOKEN_REGISTERED_TOPIC,
}

ZERO_ADDRESS = "0x" + "0" * 40
SECONDS_PER_DAY = 86_400


def topic_of(signature: str) -> str:
    """keccak256 of an event signature as a 0x-prefixed lowercase hex string."""
    from eth_hash.auto import keccak  # imported here: workers never need it (~15 ms each)

    return "0x" + keccak(signature.encode()).hex()


def check_topics() -> None:
    """Raise RuntimeError if any hard-coded topic0 differs from keccak(signature).

    The old backfill shipped wrong TransferSingle/TransferBatch hashes and captured nothing;
    this runs at every start-up so that can never happen again.
    """
    bad = [
        f"{name}: configured {TOPICS[name]}, keccak({sig}) = {topic_of(sig)}"
        for name, sig in SIGNATURES.items()
        if topic_of(sig) != TOPICS[name]
    ]
    if bad:
        raise RuntimeError("wrong event topic0 values: " + "; ".join(bad))
