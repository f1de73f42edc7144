"""How good is the ETA? Real headless runs on the devchain, and replays of their recorded inputs.

    .venv/bin/python bench/eta.py [--quick | --only NAME] [--keep DIR] [--baseline REV]
    .venv/bin/python bench/eta.py --replay DIR_OR_FILES... [--baseline REV]

Scenarios (each a real `backfill-console --no-ui` run: anvil devchain, worker processes, chdb):
  devchain     48 days, 4 shards, a request budget that makes the run last ~1-2 min
  throttled    24 days, 2 shards, a tight budget (1 request/s per worker)
  scaled       48 days, 2 shards, `ctl scale 4` at 30% of the days
  scaled_down  48 days, 4 shards, `ctl scale 2` at 30% of the days
Live: each run's progress (`ctl status --json`: days COMPLETE, ETA, its note) is read once a
second; at the first sample with 10%, 25% and 50% of the days COMPLETE, the ETA shown is compared
with the time the last day actually took to COMPLETE: error = (ETA - actual) / actual. Target:
|error| <= 25% from 10% on. An ETA still "calculating" at a point counts as a miss.

Replay: every run also records the ETA's inputs (BACKFILL_ETA_TRACE: worker starts, DayDones with
the worker's day figures, checkpoints, monitor ticks with the days left; engine.run_view) to
<name>.jsonl (in --keep DIR, else a temporary folder). `--replay` feeds recorded traces to the
estimator of this checkout, tick by tick, and prints the same errors, in a second per run; with
`--baseline REV` also to engine/eta.py of git revision REV (its older interface: days counted,
pooled shard-seconds), so both are measured on the same runs.

bench/traces/ holds one recorded run per scenario (this machine, loaded), so
`bench/eta.py --replay bench/traces --baseline REV` compares two estimators in a second.

Loopback only; a run is stopped as soon as its last day is COMPLETE (no rebuild is timed).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
POINTS = (0.10, 0.25, 0.50)
TARGET = 0.25
SCENARIOS = {
    "devchain": {"days": 48, "shards": 4, "rps": 6.0, "scale_at": None},
    "throttled": {"days": 24, "shards": 2, "rps": 2.0, "scale_at": None},
    "scaled": {"days": 48, "shards": 2, "rps": 6.0, "scale_at": (0.30, 4)},
    "scaled_down": {"days": 48, "shards": 4, "rps": 6.0, "scale_at": (0.30, 2)},
}


def write_config(folder: Path, devchain: Path, days: int, shards: int, rps: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.toml"
    path.write_text(
        f"""[rpc]
requests_per_second = {rps}
timeout_s = 10.0
[clickhouse]
path = "clickhouse"
[backfill]
days = {days}
shards = {shards}
confirmations = 2
data_dir = "backfill"
[monitor]
stall_after_s = 120
check_interval_s = 1
[devchain]
state_dir = "{devchain}"
seed = 7
blocks_per_day = 48
wallets = 12
transfers_per_day = 40
"""
    )
    return path


def env(trace: Path | None = None) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in ("ETHEREUM_RPC_URLS", "SHARDS")}
    e["PYTHONPATH"] = str(ROOT)
    e.pop("BACKFILL_ETA_TRACE", None)
    if trace is not None:
        e["BACKFILL_ETA_TRACE"] = str(trace)
    return e


def ctl(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", "ctl", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        env=env(),
        timeout=30,
    )


def run(name: str, spec: dict, base: Path, devchain: Path, traces: Path) -> dict:
    config = write_config(base / name, devchain, spec["days"], spec["shards"], spec["rps"])
    trace = traces / f"{name}.jsonl"
    trace.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "--no-ui", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env(trace),
    )
    samples: list[dict] = []
    scaled = False
    t0 = None
    try:
        while proc.poll() is None:
            time.sleep(1.0)
            out = ctl(config, "status", "--json")
            if out.returncode != 0:
                continue
            st = json.loads(out.stdout)
            now = time.monotonic()
            if t0 is None and st["state"] == "running":
                t0 = now
            if t0 is None:
                continue
            samples.append(
                {
                    "t": round(now - t0, 2),
                    "days": st["days_complete"],
                    "total": st["days_total"],
                    "eta_s": st.get("eta_s"),
                    "note": st.get("eta_note", ""),
                    "shards": st["shards"],
                }
            )
            frac = st["days_complete"] / st["days_total"]
            if spec["scale_at"] and not scaled and frac >= spec["scale_at"][0]:
                ctl(config, "scale", str(spec["scale_at"][1]))
                scaled = True
            if st["days_complete"] >= st["days_total"]:
                break
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    (traces / f"{name}.status.json").write_text(json.dumps(samples))
    print(f"{name}: {len(samples)} status samples; ETA inputs in {trace}", flush=True)
    return evaluate(samples)


def evaluate(samples: list[dict]) -> dict:
    """Errors of the ETA at POINTS against the time the last day was actually COMPLETE."""
    end = next((s["t"] for s in samples if s["days"] >= s["total"]), None)
    out: dict = {"duration_s": end, "points": {}}
    if end is None:
        return out
    for p in POINTS:
        s = next((s for s in samples if s["days"] >= p * s["total"]), None)
        if s is None:
            continue
        actual = end - s["t"]
        if s["eta_s"] is None:
            out["points"][p] = (None, actual, s["note"] or "calculating")
        else:
            out["points"][p] = ((s["eta_s"] - actual) / actual if actual > 0 else 0.0, actual, "")
    return out


def load_estimator(rev: str | None) -> types.ModuleType:
    """engine/eta.py of this checkout (rev None) or of git revision `rev`."""
    if rev is None:
        from engine import eta

        return eta
    src = subprocess.run(
        ["git", "show", f"{rev}:engine/eta.py"], cwd=ROOT, capture_output=True, text=True
    )
    if src.returncode != 0:
        raise SystemExit(f"--baseline {rev}: {src.stderr.strip()}")
    mod = types.ModuleType(f"eta_{rev}")
    sys.modules[mod.__name__] = mod  # dataclasses look their module up
    exec(compile(src.stdout, f"{rev}:engine/eta.py", "exec"), mod.__dict__)
    return mod


def replay(events: list[list[Any]], mod: types.ModuleType) -> dict:
    """Feed a recorded trace to `mod`'s EtaEstimator; its estimate at every monitor tick is a
    sample, evaluated like a live run's (the same POINTS, the same actual end)."""
    est = mod.EtaEstimator()
    new_api = hasattr(est, "fetched")
    total = sum(1 for e in events if e[0] == "done")
    shares: dict[int, float] = {}
    samples: list[dict] = []
    done = 0
    t0 = float(events[0][1]) if events else 0.0
    for ev in events:
        kind, t = ev[0], float(ev[1])
        if kind == "start":
            shares[int(ev[2])] = float(ev[3])
            if new_api:
                est.started(t, int(ev[2]), float(ev[3]))
        elif kind == "fetched" and new_api:
            shard, day, seconds, wait_s, calls = ev[2:7]
            cost = mod.DayCost(seconds, wait_s, calls, shares.get(int(shard), 0.0))
            est.fetched(t, int(shard), int(day), cost)
        elif kind == "done":
            done += 1
            if new_api:
                est.completed(t, int(ev[2]))
            else:
                est.completed(t, 0)
        elif kind == "scale" and not new_api:
            est.new_layout(t)
        elif kind == "tick":
            running, blocked, left = bool(ev[2]), str(ev[3]), {int(k): n for k, n in ev[4].items()}
            if new_api:
                est.tick(t, running)
            else:
                est.tick(t, running, sum(1 for n in left.values() if n))
            e = est.estimate(left, blocked)
            samples.append(
                {"t": t - t0, "days": done, "total": total, "eta_s": e.seconds, "note": e.note}
            )
    return evaluate(samples)


def read_trace(path: Path) -> list[list[Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def table(title: str, results: dict[str, dict]) -> tuple[float, int]:
    """Print one table of errors; (worst |error|, points without an estimate)."""
    print(f"-- {title}")
    print(
        f"{'scenario':<20} {'run s':>6}  "
        + "  ".join(f"{int(p * 100):>3}%: err (left s)" for p in POINTS)
    )
    worst = 0.0
    missed = 0
    for name, res in results.items():
        cells = []
        for p in POINTS:
            got = res["points"].get(p)
            if got is None:
                cells.append(f"{'-':>18}")
                missed += 1
            elif got[0] is None:
                cells.append(f"{got[2][:11]:>11} ({got[1]:>4.0f})")
                missed += 1
            else:
                worst = max(worst, abs(got[0]))
                cells.append(f"{got[0] * 100:>+9.0f}% ({got[1]:>4.0f})")
        dur = res["duration_s"]
        print(f"{name:<20} {dur if dur is not None else float('nan'):>6.0f}  " + "  ".join(cells))
    ok = worst <= TARGET and missed == 0
    print(
        f"worst |error| {worst * 100:.0f}% (target <= {TARGET * 100:.0f}% from 10% on); "
        f"points without an estimate: {missed}: {'MET' if ok else 'MISSED'}",
        flush=True,
    )
    return worst, missed


def trace_files(args: Iterable[str]) -> list[Path]:
    out: list[Path] = []
    for a in args:
        p = Path(a)
        out.extend(sorted(p.glob("*.jsonl")) if p.is_dir() else [p])
    return out


def replay_tables(paths: list[Path], baseline: str | None) -> None:
    stems = [p.stem for p in paths]
    traces = {
        (p.stem if stems.count(p.stem) == 1 else f"{p.parent.name}/{p.stem}"): read_trace(p)
        for p in paths
    }
    mods = [("replay: this checkout's engine/eta.py", load_estimator(None))]
    if baseline:
        mods.append((f"replay: engine/eta.py at {baseline}", load_estimator(baseline)))
    for title, mod in mods:
        t0 = time.process_time()
        results = {name: replay(ev, mod) for name, ev in traces.items()}
        cpu = time.process_time() - t0
        table(f"{title} ({len(traces)} traces, {cpu:.2f} s CPU)", results)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="only the devchain scenario")
    ap.add_argument("--only", choices=sorted(SCENARIOS), action="append", help="a scenario")
    ap.add_argument("--keep", metavar="DIR", help="write the traces here (kept)")
    ap.add_argument("--replay", nargs="+", metavar="TRACE", help="replay traces (files or dirs)")
    ap.add_argument("--baseline", metavar="REV", help="also replay through REV's engine/eta.py")
    args = ap.parse_args()
    if args.replay:
        replay_tables(trace_files(args.replay), args.baseline)
        return 0
    names = args.only or (["devchain"] if args.quick else list(SCENARIOS))
    with tempfile.TemporaryDirectory(prefix="bench-eta-") as tmp:
        base = Path(tmp)
        traces = Path(args.keep) if args.keep else base / "traces"
        traces.mkdir(parents=True, exist_ok=True)
        results = {n: run(n, SCENARIOS[n], base, base / "devchain", traces) for n in names}
        table("live: the ETA the console showed", results)
        replay_tables([traces / f"{n}.jsonl" for n in names], args.baseline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
