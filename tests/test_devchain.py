"""The devchain against a real anvil: logs per day equal the ground truth, exactly.

One tiny chain (3 days) is built once for the module; every check reads it over JSON-RPC.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from eth_abi import decode as abi_decode

from engine.analytics.positions import outcome_token_ids
from engine.config import (
    CONDITIONAL_TOKENS,
    CTF_EXCHANGE,
    CTF_EXCHANGE_V2,
    NEGRISK_ADAPTER,
    NEGRISK_CTF_EXCHANGE,
    NEGRISK_CTF_EXCHANGE_V2,
    PUSD,
    USDC_E,
)
from engine.constants import (
    CONDITION_RESOLUTION_TOPIC,
    TOKEN_REGISTERED_TOPIC,
    TRANSFER_BATCH_TOPIC,
    TRANSFER_SINGLE_TOPIC,
    TRANSFER_TOPIC,
    ZERO_ADDRESS,
)
from engine.devchain import Devchain, DevchainSpec, load_ground_truth, start_devchain
from engine.devchain.anvil import Rpc
from engine.devchain.history import day_start, generate, ground_truth

pytestmark = pytest.mark.slow  # end to end: real anvil

ROOT = Path(__file__).resolve().parent.parent
EXCHANGES = (CTF_EXCHANGE, NEGRISK_CTF_EXCHANGE, CTF_EXCHANGE_V2, NEGRISK_CTF_EXCHANGE_V2)
SPEC = DevchainSpec(
    start_date=dt.date(2022, 12, 18),
    days=3,
    seed=11,
    blocks_per_day=48,
    wallets=8,
    transfers_per_day=30,
    markets_per_day=1.0,
    erc20_tokens=(USDC_E, PUSD),
    erc20_counterparties=(CONDITIONAL_TOKENS, *EXCHANGES, NEGRISK_ADAPTER),
    erc1155=(CONDITIONAL_TOKENS,),
    exchanges=EXCHANGES,
    collateral=USDC_E,
)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("devchain")


@pytest.fixture(scope="module")
def chain(root: Path):
    msgs: list[str] = []
    with start_devchain(SPEC, root, log=msgs.append) as c:
        c.messages = msgs  # type: ignore[attr-defined]
        yield c


@pytest.fixture(scope="module")
def rpc(chain: Devchain):
    r = Rpc(chain.url)
    yield r
    r.close()


@pytest.fixture(scope="module")
def all_logs(rpc: Rpc, chain: Devchain) -> list[dict[str, Any]]:
    return rpc.call("eth_getLogs", [{"fromBlock": "0x0", "toBlock": hex(chain.head_block)}])


def _addr(topic: str) -> str:
    return "0x" + topic[-40:]


def _ts(rpc: Rpc, n: int) -> int:
    return int(rpc.call("eth_getBlockByNumber", [hex(n), False])["timestamp"], 16)


def test_build_reports_and_writes_cache(chain: Devchain, root: Path) -> None:
    assert any("devchain: built 3 days" in m for m in chain.messages)  # type: ignore[attr-defined]
    assert chain.ground_truth_path == root / SPEC.key() / "ground_truth.json"
    assert chain.ground_truth_path.exists() and (root / SPEC.key() / "state.json").exists()
    assert load_ground_truth(chain.ground_truth_path)["head_block"] == chain.head_block
    assert chain.url == f"http://127.0.0.1:{chain.port}"


def test_day_logs_equal_ground_truth(chain: Devchain, rpc: Rpc) -> None:
    gt = chain.ground_truth
    cps = set(SPEC.erc20_counterparties)
    for d in range(SPEC.days):
        want = gt["per_day"][str(d)]
        lo, hi = want["from_block"], want["to_block"]
        if d in gt["empty_days"]:
            assert hi == lo - 1 and want["blocks"] == 0
            continue
        assert hi - lo + 1 == want["blocks"]
        # The range is exactly the day's blocks.
        start = day_start(SPEC.start_date, d)
        assert start <= _ts(rpc, lo) and _ts(rpc, hi) < start + 86400
        assert _ts(rpc, lo - 1) < start and _ts(rpc, hi + 1) >= start + 86400
        erc20 = rpc.call(
            "eth_getLogs",
            [
                {
                    "fromBlock": hex(lo),
                    "toBlock": hex(hi),
                    "address": list(SPEC.erc20_tokens),
                    "topics": [TRANSFER_TOPIC],
                }
            ],
        )
        captured = [
            x
            for x in erc20
            if len(x["topics"]) == 3
            and (_addr(x["topics"][1]) in cps or _addr(x["topics"][2]) in cps)
        ]
        assert len(captured) == want["erc20_count"], d
        assert sum(int(x["data"], 16) for x in captured) == int(want["erc20_value_sum"])
        e1155 = rpc.call(
            "eth_getLogs",
            [
                {
                    "fromBlock": hex(lo),
                    "toBlock": hex(hi),
                    "address": list(SPEC.erc1155),
                    "topics": [[TRANSFER_SINGLE_TOPIC, TRANSFER_BATCH_TOPIC]],
                }
            ],
        )
        rows = []
        for x in e1155:
            data = bytes.fromhex(x["data"][2:])
            if x["topics"][0] == TRANSFER_SINGLE_TOPIC:
                rows.append(int.from_bytes(data[32:], "big"))
            else:
                ids, values = abi_decode(["uint256[]", "uint256[]"], data)
                assert len(ids) == len(values) >= 1
                rows += values
        assert len(rows) == want["erc1155_count"], d
        assert sum(rows) == int(want["erc1155_value_sum"])


def test_keys_and_special_logs(chain: Devchain, all_logs: list[dict[str, Any]]) -> None:
    gt = chain.ground_truth
    cps = set(SPEC.erc20_counterparties)
    tokens = set(SPEC.erc20_tokens)
    erc20_keys, erc1155_keys = [], []
    erc721 = non_cp = 0
    for x in all_logs:
        t = x["topics"]
        key = [x["transactionHash"], int(x["logIndex"], 16)]
        if x["address"] in tokens and t[0] == TRANSFER_TOPIC:
            if len(t) == 4:
                erc721 += 1
                assert x["data"] == "0x"
            elif _addr(t[1]) in cps or _addr(t[2]) in cps:
                erc20_keys.append(key)
            else:
                non_cp += 1
        elif t[0] == TRANSFER_SINGLE_TOPIC:
            erc1155_keys.append([*key, 0])
        elif t[0] == TRANSFER_BATCH_TOPIC:
            ids, _ = abi_decode(["uint256[]", "uint256[]"], bytes.fromhex(x["data"][2:]))
            erc1155_keys += [[*key, j] for j in range(len(ids))]
    assert erc20_keys == gt["erc20_keys"]
    assert erc1155_keys == gt["erc1155_keys"]
    assert erc721 == gt["erc721_shaped"] >= 1
    assert non_cp == gt["non_counterparty_erc20"] >= 1
    values = [int(x["data"], 16) for x in all_logs if len(x["topics"]) == 3]
    assert max(values) > 2**200 and any(2**64 <= v < 2**200 for v in values)


def test_boundary_blocks(chain: Devchain, rpc: Rpc, all_logs: list[dict[str, Any]]) -> None:
    gt = chain.ground_truth
    captured_blocks = {
        int(x["blockNumber"], 16)
        for x in all_logs
        if [x["transactionHash"], int(x["logIndex"], 16)] in gt["erc20_keys"]
    }
    assert gt["boundary_blocks"]["midnight"] and gt["boundary_blocks"]["last_second"]
    for block, day in gt["boundary_blocks"]["midnight"]:
        assert _ts(rpc, block) == day_start(SPEC.start_date, day)
        assert block in captured_blocks
    for block, day in gt["boundary_blocks"]["last_second"]:
        assert _ts(rpc, block) == day_start(SPEC.start_date, day + 1) - 1
        assert block in captured_blocks
    assert gt["empty_days"] and 0 not in gt["empty_days"]


def test_market_activity_is_consistent(chain: Devchain, all_logs: list[dict[str, Any]]) -> None:
    gt = chain.ground_truth
    mk = gt["markets"]
    conditions = {c["condition_id"]: c for c in mk["conditions"]}
    assert any(c["outcome_count"] > 2 for c in conditions.values())
    assert any(c["payout_numerators"] == [1, 1] for c in conditions.values())
    token_of: dict[int, tuple[str, int]] = {}
    for c in conditions.values():
        ids = outcome_token_ids(SPEC.collateral, c["condition_id"], c["outcome_count"])
        assert [str(i) for i in ids] == c["token_ids"]
        token_of.update({t: (c["condition_id"], i) for i, t in enumerate(ids)})
    by_tx: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for x in all_logs:
        by_tx[x["transactionHash"]].append(x)
    by_tx_events: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ev in mk["events"]:
        by_tx_events[ev["tx_hash"]].append(ev)
    # Registrations and resolutions on chain match the conditions.
    regs = [x for x in all_logs if x["topics"][0] == TOKEN_REGISTERED_TOPIC]
    for x in regs:
        t0, t1, cond = int(x["topics"][1], 16), int(x["topics"][2], 16), x["topics"][3]
        assert token_of[t0][0] == token_of[t1][0] == cond
    assert len(regs) == 2 * sum(c["registered"] for c in conditions.values())
    for x in all_logs:
        if x["topics"][0] == CONDITION_RESOLUTION_TOPIC:
            n, payout = abi_decode(["uint256", "uint256[]"], bytes.fromhex(x["data"][2:]))
            assert conditions[x["topics"][1]]["payout_numerators"] == list(payout)
            assert n == len(payout)
    # Balances replayed from the chain never go negative; they equal the positions' balances.
    bal: dict[tuple[str, int], int] = defaultdict(int)
    for x in all_logs:
        t = x["topics"]
        if t[0] not in (TRANSFER_SINGLE_TOPIC, TRANSFER_BATCH_TOPIC):
            continue
        data = bytes.fromhex(x["data"][2:])
        if t[0] == TRANSFER_SINGLE_TOPIC:
            pairs = [(int.from_bytes(data[:32], "big"), int.from_bytes(data[32:], "big"))]
        else:
            ids, values = abi_decode(["uint256[]", "uint256[]"], data)
            pairs = list(zip(ids, values, strict=True))
        frm, to = _addr(t[2]), _addr(t[3])
        for tid, v in pairs:
            if frm != ZERO_ADDRESS:
                bal[(frm, tid)] -= v
                assert bal[(frm, tid)] >= 0, (frm, tid)
            if to != ZERO_ADDRESS:
                bal[(to, tid)] += v
    for p in mk["positions"]:
        c = conditions[p["condition_id"]]
        got = [bal[(p["wallet"], int(t))] for t in c["token_ids"]]
        assert got == p["token_balances"]
    # Every event's deltas are visible in its own transaction's logs (a transaction with several
    # events: the wallet's USDC in the logs is the sum of its events' USDC).
    usdc = SPEC.collateral
    events_of: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for ev in mk["events"]:
        events_of[(ev["tx_hash"], ev["wallet"])].append(ev)
    for (tx, w), evs in events_of.items():
        logs = by_tx[tx]
        usdc_delta = 0
        for x in logs:
            if x["address"] == usdc and x["topics"][0] == TRANSFER_TOPIC:
                v = int(x["data"], 16)
                usdc_delta += (v if _addr(x["topics"][2]) == w else 0) - (
                    v if _addr(x["topics"][1]) == w else 0
                )
        assert usdc_delta == sum(ev["usdc_delta"] for ev in evs), evs
        assert (len(evs) > 1 or len(by_tx_events[tx]) > 1) == (evs[0]["batch"] is not None), evs
        for ev in evs:
            if ev["kind"] == "trade" and ev["batch"] is None:
                assert len(logs) == 2 and logs[0]["address"] == usdc
                assert logs[1]["topics"][0] == TRANSFER_SINGLE_TOPIC
            if ev["kind"] == "trade":
                assert (ev["side"] == "BUY") == (ev["usdc_delta"] < 0)
    # Conservation: every outcome of a condition has the same supply until resolution, and the
    # collateral left in ConditionalTokens backs exactly the tokens still held.
    backing = 0
    for cid, c in conditions.items():
        held = [sum(p["token_balances"][i] for p in mk["positions"] if p["condition_id"] == cid)
                for i in range(c["outcome_count"])]  # fmt: skip
        if c["payout_numerators"] is None:
            assert len(set(held)) == 1, cid
            backing += held[0]
        else:
            den = sum(c["payout_numerators"])
            backing += sum(h * p // den for h, p in zip(held, c["payout_numerators"], strict=True))
    assert backing == mk["summary"]["ctf_usdc_outstanding"]
    kinds = {ev["kind"] for ev in mk["events"]}
    assert {"trade", "split", "redeem"} <= kinds
    # Transactions touching several markets or wallets (docs/ANALYTICS.md, cash attribution).
    shapes = {ev["batch"] for ev in mk["events"]} - {None}
    assert shapes and shapes <= {"two_markets", "batched_redeem", "split_sell_other", "multi_fill"}
    for evs in by_tx_events.values():
        conds = {ev["condition_id"] for ev in evs}
        wallets = {ev["wallet"] for ev in evs}
        shape = evs[0]["batch"]
        assert {ev["batch"] for ev in evs} == {shape}, evs
        if shape in ("two_markets", "batched_redeem", "split_sell_other"):
            assert len(wallets) == 1 and len(conds) >= 2, evs
        elif shape == "multi_fill":
            assert len(conds) == 1 and len(wallets) >= 3, evs


def test_second_start_loads_cache_and_serves_same_logs(
    chain: Devchain, root: Path, all_logs: list[dict[str, Any]]
) -> None:
    msgs: list[str] = []
    with start_devchain(SPEC, root, log=msgs.append) as again:
        assert any("loaded" in m for m in msgs) and not any("built" in m for m in msgs)
        assert again.port != chain.port and again.head_block == chain.head_block
        r = Rpc(again.url)
        logs = r.call("eth_getLogs", [{"fromBlock": "0x0", "toBlock": hex(again.head_block)}])
        r.close()
        assert logs == all_logs
        assert again.ground_truth == chain.ground_truth


def test_same_seed_same_truth_and_concurrent_builds(tmp_path: Path, chain: Devchain) -> None:
    fake = [f"0x{i:064x}" for i in range(100_000)]
    a, b = generate(SPEC), generate(SPEC)
    assert ground_truth(a, fake[: a.tx_count]) == ground_truth(b, fake[: b.tx_count])
    other = generate(DevchainSpec(**{**SPEC.__dict__, "seed": SPEC.seed + 1}))
    assert ground_truth(other, fake[: other.tx_count]) != ground_truth(a, fake[: a.tx_count])
    # Two processes' worth of starts on an empty cache at once: one builds, one waits and loads;
    # both serve the same chain, whose tx hashes equal the first build's (deterministic signing).
    results: list[Devchain] = []
    msgs: list[str] = []

    def start() -> None:
        results.append(start_devchain(SPEC, tmp_path, log=msgs.append))

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    try:
        assert len(results) == 2
        assert sum("devchain: built" in m for m in msgs) == 1
        assert sum("devchain: loaded" in m for m in msgs) == 1
        drop = {"build"}
        truth = {k: v for k, v in results[0].ground_truth.items() if k not in drop}
        assert truth == {k: v for k, v in chain.ground_truth.items() if k not in drop}
        assert not list(tmp_path.glob(".*tmp*"))
    finally:
        for r in results:
            r.stop()


def test_cli_serves_until_sigint(tmp_path: Path, root: Path) -> None:
    from tests.support.config import write_config

    config = write_config(tmp_path, days=2, devchain_state=root)
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "devchain", "--config", str(config), "--seed", "3"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "ETHEREUM_RPC_URLS"},
    )
    assert proc.stdout is not None
    url = gt_path = None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("devchain: RPC URL "):
            url = line.split()[-1]
        if line.startswith("devchain: ground truth "):
            gt_path = Path(line.split(" ", 3)[-1].strip())
        if "serving" in line:
            break
    assert url and gt_path and gt_path.exists(), "".join(lines)
    r = Rpc(url)
    assert int(r.call("eth_blockNumber"), 16) == load_ground_truth(gt_path)["head_block"]
    r.close()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0
    bad = subprocess.run(
        [sys.executable, "-m", "engine.cli", "devchain", "--config", str(config), "--days", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "--days 0" in bad.stderr


def test_node_dies_with_its_owner(root: Path, chain: Devchain) -> None:
    """SIGKILL the process that started the devchain: its anvil node stops too (no orphans)."""
    code = (
        "import sys; from pathlib import Path; from tests.test_devchain import SPEC; "
        "from engine.devchain import start_devchain; "
        "c = start_devchain(SPEC, Path(sys.argv[1]), log=lambda m: None); "
        "print(c.url, flush=True); import time; time.sleep(60)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(root)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    r = Rpc(url, timeout=2.0)
    assert int(r.call("eth_blockNumber"), 16) == chain.head_block
    r.close()
    proc.kill()
    proc.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            Rpc(url, timeout=1.0).call("eth_blockNumber")
        except OSError:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"anvil at {url} still answers after its owner was killed")
