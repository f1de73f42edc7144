"""ConditionalTokens ids computed exactly as the Polygon ConditionalTokens contract does.

Mirrors Gnosis `CTHelpers.sol`:
* condition id  = keccak256(abi.encodePacked(oracle, questionId, outcomeSlotCount))
* collection id = the alt_bn128 point method: hash (conditionId, indexSet) to a curve x coordinate,
  find y with y^2 = x^3 + 3 (mod P) (incrementing x until it is on the curve), choose y's parity
  from the hash's top bit, add the parent collection's point when there is a parent, and encode the
  point's y parity in bit 254 of x.
* position id   = uint256(keccak256(abi.encodePacked(collateralToken, collectionId)))
Index set `1 << i` selects outcome i, so a binary market's tokens are index sets 1 and 2.
"""

from __future__ import annotations

from eth_hash.auto import keccak

P = 21888242871839275222246405745257275088696311157297823662689037894645226208583
B = 3
ZERO32 = b"\0" * 32


def _b32(x: bytes | str) -> bytes:
    """A bytes32 value from bytes or a 0x hex string."""
    if isinstance(x, str):
        x = bytes.fromhex(x.removeprefix("0x"))
    if len(x) != 32:
        raise ValueError(f"expected 32 bytes, got {len(x)}")
    return x


def _addr(a: str) -> bytes:
    raw = bytes.fromhex(a.removeprefix("0x"))
    if len(raw) != 20:
        raise ValueError(f"not an address: {a}")
    return raw


def condition_id(oracle: str, question_id: bytes | str, outcome_slot_count: int) -> str:
    """getConditionId(oracle, questionId, outcomeSlotCount) as a 0x lowercase hex string."""
    packed = _addr(oracle) + _b32(question_id) + outcome_slot_count.to_bytes(32, "big")
    return "0x" + keccak(packed).hex()


def _sqrt(x: int) -> int:
    # P % 4 == 3, so a square root (when one exists) is x^((P+1)/4).
    return pow(x, (P + 1) // 4, P)


def _ec_add(p1: tuple[int, int], p2: tuple[int, int]) -> tuple[int, int]:
    """alt_bn128 affine point addition as the ecAdd precompile (0x06); (0, 0) is infinity."""
    (x1, y1), (x2, y2) = p1, p2
    if (x1, y1) == (0, 0):
        return p2
    if (x2, y2) == (0, 0):
        return p1
    if x1 == x2:
        if (y1 + y2) % P == 0:
            return (0, 0)
        lam = 3 * x1 * x1 * pow(2 * y1, -1, P) % P
    else:
        lam = (y2 - y1) * pow(x2 - x1, -1, P) % P
    x3 = (lam * lam - x1 - x2) % P
    y3 = (lam * (x1 - x3) - y1) % P
    return (x3, y3)


def collection_id(parent: bytes | str, condition: bytes | str, index_set: int) -> bytes:
    """CTHelpers.getCollectionId(parentCollectionId, conditionId, indexSet) as 32 bytes."""
    h = keccak(_b32(condition) + index_set.to_bytes(32, "big"))
    x1 = int.from_bytes(h, "big")
    odd = x1 >> 255 != 0
    while True:
        x1 = (x1 + 1) % P
        yy = (x1 * x1 * x1 + B) % P
        y1 = _sqrt(yy)
        if y1 * y1 % P == yy:
            break
    if (odd and y1 % 2 == 0) or (not odd and y1 % 2 == 1):
        y1 = P - y1
    x2 = int.from_bytes(_b32(parent), "big")
    if x2 != 0:
        odd = x2 >> 254 != 0
        x2 &= (1 << 254) - 1
        yy = (x2 * x2 * x2 + B) % P
        y2 = _sqrt(yy)
        if (odd and y2 % 2 == 0) or (not odd and y2 % 2 == 1):
            y2 = P - y2
        if y2 * y2 % P != yy:
            raise ValueError("invalid parent collection ID")
        x1, y1 = _ec_add((x1, y1), (x2, y2))
    if y1 % 2 == 1:
        x1 ^= 1 << 254
    return x1.to_bytes(32, "big")


def position_id(collateral: str, collection: bytes | str) -> int:
    """CTHelpers.getPositionId(collateralToken, collectionId): the ERC1155 token id."""
    return int.from_bytes(keccak(_addr(collateral) + _b32(collection)), "big")


def outcome_token_ids(collateral: str, condition: bytes | str, outcome_count: int) -> list[int]:
    """Token ids of a condition's outcomes (top-level positions), indexed by outcome index."""
    return [
        position_id(collateral, collection_id(ZERO32, condition, 1 << i))
        for i in range(outcome_count)
    ]
