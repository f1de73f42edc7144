"""The devchain: a local anvil node serving a deterministic synthetic chain with known ground truth.

    spec = DevchainSpec.from_config(cfg)
    with start_devchain(spec, cfg.devchain.state_dir) as chain:
        chain.url, chain.ground_truth["per_day"]["0"]["erc20_count"]

Cache layout: `state_root/<spec.key()>/{state.json, ground_truth.json}`. The first start generates
the history, mines it into a fresh node, verifies it and dumps it (printing progress); later starts
load `state.json` into anvil in seconds and check the head block hash against the ground truth.
Concurrent starts are safe: builds are serialised by an flock on `state_root/<key>.lock`, each
build happens in a temporary folder that is renamed into place atomically, and a start that finds a
damaged cache rebuilds it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engine.devchain.anvil import AnvilError, AnvilProcess, start_anvil
from engine.devchain.history import DevchainSpec

__all__ = [
    "AnvilError",
    "Devchain",
    "DevchainSpec",
    "load_ground_truth",
    "start_devchain",
]

STATE_FILE = "state.json"
TRUTH_FILE = "ground_truth.json"


class Devchain:
    """A running devchain node and its ground truth. Stop it with `stop()` or a `with` block."""

    def __init__(
        self, node: AnvilProcess, spec: DevchainSpec, folder: Path, ground_truth: dict[str, Any]
    ) -> None:
        self.node = node
        self.spec = spec
        self.folder = folder
        self.url: str = node.url
        self.port: int = node.port
        self.ground_truth_path: Path = folder / TRUTH_FILE
        self.state_path: Path = folder / STATE_FILE
        self.ground_truth: dict[str, Any] = ground_truth
        self.head_block: int = int(ground_truth["head_block"])

    @property
    def pid(self) -> int:
        return self.node.pid

    def alive(self) -> bool:
        return self.node.alive()

    def stop(self) -> None:
        self.node.stop()

    def __enter__(self) -> Devchain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def load_ground_truth(path: str | Path) -> dict[str, Any]:
    """Read a ground_truth.json (a file, or a devchain cache folder holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / TRUTH_FILE
    return json.loads(p.read_text())


@contextmanager
def _locked(lock_path: Path, log: Callable[[str], None]) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"devchain: another process is building {lock_path.stem}; waiting for it")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _load(
    spec: DevchainSpec, folder: Path, port: int | None, log: Callable[[str], None]
) -> Devchain | None:
    """Start a node from the cache folder; None (after logging why) if the cache is unusable."""
    from engine.devchain.build import head_info

    try:
        truth = load_ground_truth(folder / TRUTH_FILE)
    except (OSError, ValueError) as exc:
        log(f"devchain: unreadable ground truth in {folder} ({exc}); rebuilding")
        return None
    t0 = time.monotonic()
    node = start_anvil(port=port, load_state=folder / STATE_FILE, log_path=folder / "anvil.log")
    try:
        head = head_info(node.url)
    except Exception as exc:  # noqa: BLE001 - any failure here means: rebuild
        node.stop()
        log(f"devchain: cached state in {folder} does not answer ({exc}); rebuilding")
        return None
    want = {k: truth.get(k) for k in ("head_block", "head_block_hash")}
    if head != want:
        node.stop()
        log(f"devchain: cached state in {folder} is {head}, expected {want}; rebuilding")
        return None
    log(
        f"devchain: loaded {spec.days} days ({truth['totals']['rows']} rows, "
        f"{truth['head_block']} blocks) from {folder} in {time.monotonic() - t0:.1f} s"
    )
    return Devchain(node, spec, folder, truth)


def _build(
    spec: DevchainSpec, state_root: Path, port: int | None, log: Callable[[str], None]
) -> Devchain:
    from engine.devchain.build import (
        dump_state,
        head_info,
        mine_history,
        start_build_node,
        verify_chain,
    )
    from engine.devchain.history import generate, ground_truth

    key = spec.key()
    final = state_root / key
    tmp = state_root / f".{key}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    t0 = time.monotonic()
    history = generate(spec)
    log(
        f"devchain: building {spec.days} days from {spec.start_date} (seed {spec.seed}): "
        f"{history.head_block} blocks, {history.tx_count} txs -> {final}"
    )
    node = start_build_node(history, tmp / "anvil.log", port)
    try:
        t1 = time.monotonic()
        hashes = mine_history(node, history, log)
        t2 = time.monotonic()
        n_logs = verify_chain(node, history, hashes)
        t3 = time.monotonic()
        size = dump_state(node.url, tmp / STATE_FILE)
        t4 = time.monotonic()
        truth = ground_truth(
            history,
            hashes,
            extra={
                **head_info(node.url),
                "build": {
                    "generate_s": round(t1 - t0, 2),
                    "mine_s": round(t2 - t1, 2),
                    "verify_s": round(t3 - t2, 2),
                    "dump_s": round(t4 - t3, 2),
                    "state_bytes": size,
                    "logs": n_logs,
                },
            },
        )
        (tmp / TRUTH_FILE).write_text(json.dumps(truth, separators=(",", ":")))
        if final.exists():  # a damaged cache (we hold the lock, so nobody else is using it)
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        node.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(
        f"devchain: built {spec.days} days in {time.monotonic() - t0:.1f} s "
        f"(mine {t2 - t1:.1f} s, verify {t3 - t2:.1f} s, dump {t4 - t3:.1f} s): "
        f"{truth['totals']['rows']} rows ({truth['totals']['erc20_rows']} erc20, "
        f"{truth['totals']['erc1155_rows']} erc1155), {truth['head_block']} blocks, "
        f"state {size / 1e6:.0f} MB"
    )
    return Devchain(node, spec, final, truth)


def start_devchain(
    spec: DevchainSpec,
    state_root: Path,
    port: int | None = None,
    log: Callable[[str], None] = print,
) -> Devchain:
    """Serve the devchain for `spec` on 127.0.0.1 (a free port unless `port` is given).

    Loads `state_root/<spec.key()>` when it exists, otherwise builds it (and keeps serving the node
    that built it).
    """
    state_root = Path(state_root)
    key = spec.key()
    folder = state_root / key
    with _locked(state_root / f"{key}.lock", log):
        for stale in state_root.glob(f".{key}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if (folder / STATE_FILE).exists() and (folder / TRUTH_FILE).exists():
            chain = _load(spec, folder, port, log)
            if chain is not None:
                return chain
        return _build(spec, state_root, port, log)
