"""Timer lateness on the event loop under engine load, by garbage-collector setting (issue 15).

Issue 15, item 5: timers fire late during generation-2 collections (15-42 ms). This measures,
in one run, how late a 5 ms timer wakes under a steady tradeguard load with:

  default      CPython's collector as it comes (thresholds 700, 10, 10);
  freeze       ``gc.collect(); gc.freeze()`` once start-up is done: everything alive then (the
               imported modules, ccxt's exchange classes, the layer and its symbols) moves to
               the permanent generation, which no collection scans again;
  thresholds   ``gc.set_threshold(10_000, 10, 100)`` (why these: see `TUNED`);
  both         freeze and the tuned thresholds together.

Every configuration runs in its own child process of this script (``--config NAME``), so
none inherits another's frozen objects, thresholds or heap; the parent prints the tables and
the ratios of each configuration's p99 and max lateness to the default one of the same run.

Start-up (what a 5,000-symbol engine holds before it trades): ccxt imported and one exchange
client built (the `Engine`'s ccxt broker needs both; leave them out with ``--no-ccxt``), a
`ReliabilityLayer` with ``--symbols`` symbols each given a `MarkUpdate`, a `Runtime` over it.

Load, at fixed rates however late the loop runs (a backlog is caught up, like a feed's):
  * 5,000 ``MarkUpdate``/s and 1,000 ``ApiCall(orders, ok)``/s through ``runtime.observe``;
  * 10,000 ``layer.decide()``/s, every decision kept (an in-memory audit trail: steady
    long-lived growth, about 2.5 MB/s, so full collections come every few seconds);
  * ``layer.status()`` every ``--scrape-every`` seconds (1 s), as a metrics scrape would, the
    last 2 pages kept (10,000 short-lived dicts a scrape, about 5 MB a page). Not every
    100 ms: with 5,000 symbols one call holds the loop for 25 ms or more by itself, which
    would drown what is measured here.

Measured, over ``--seconds`` after a warm-up: a task asks for ``anyio.sleep(0.005)`` again and
again and records how late each wake is; ``gc.callbacks`` records every collection (start and
stop, wall and CPU time, generation). A late wake counts "in gen2" when a full collection ran
while it was overdue; "not gc" is the worst lateness left once the collections' time is taken
out (the scrape, the load, other processes on the machine): no collector setting changes it.
At the end one ``gc.collect()`` is timed, under the load: what a full collection costs when it
does come (the tuned thresholds only postpone it).
"""

from __future__ import annotations

import argparse
import bisect
import gc
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import anyio

from tradeguard import Decision, OrderIntent, ReliabilityLayer, Settings, Side
from tradeguard.fsm import events as ev
from tradeguard.io.runtime import Runtime

CONFIGS = ("default", "freeze", "thresholds", "both")
# Tuned thresholds, chosen to make full collections rare while keeping the young ones short.
# Generation 0 every 10,000 net allocations of container objects instead of 700: 14x fewer
# young collections, each scanning at most ~10,000 young objects. Generation 1 every 10 of
# those, so it scans at most ~100,000 objects (a larger second number, such as 50, would let
# it grow to ~500,000: a full collection's size under another name). Generation 2 every 100
# generation-1 collections, about 10,000,000 net allocations against 70,000 by default
# (CPython also waits until the objects promoted since the last full collection are 25% of
# the old ones). This makes full collections rarer, not shorter: each still scans the heap.
TUNED = (10_000, 10, 100)

TIMER = 0.005  # seconds each timer sleep asks for
LATE = 0.010  # a wake later than this counts as a late timer
MARKS_PER_S = 5_000
API_CALLS_PER_S = 1_000
DECIDES_PER_S = 10_000
STATUS_HISTORY = 2  # status pages kept: 10,000 dicts, about 5 MB each with 5,000 symbols
QUANTITY = Decimal("0.01")


# ---------------------------------------------------------------------- child: one config


@dataclass
class Recorder:
    """What the measured window saw: timer wakes, collections, scrape durations."""

    recording: bool = False
    wakes: list[tuple[float, float]] = field(default_factory=list)  # (due, woke)
    pauses: list[tuple[float, float, int]] = field(default_factory=list)  # (start, stop, gen)
    gen2_cpu: list[float] = field(default_factory=list)  # CPU seconds of each full collection
    scrapes: list[float] = field(default_factory=list)
    _gc_start: float = 0.0
    _cpu_start: float = 0.0

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        # CPU time beside wall time: other processes on the machine stretch a pause's wall
        # time, never its CPU time (the work the collector did).
        if phase == "start":
            self._gc_start = time.perf_counter()
            self._cpu_start = time.thread_time()
        elif self.recording:
            self.pauses.append((self._gc_start, time.perf_counter(), info["generation"]))
            if info["generation"] == 2:
                self.gen2_cpu.append(time.thread_time() - self._cpu_start)


def start_up(symbols: int, with_ccxt: bool) -> tuple[ReliabilityLayer, list[str], object]:
    """The long-lived objects an engine holds before it trades: the layer, its symbols' names
    and (with ccxt) an exchange client."""
    client: object = None
    if with_ccxt:
        import ccxt.async_support as ccxt

        client = ccxt.coinbase({"enableRateLimit": False})
    layer = ReliabilityLayer(Settings())
    names = [f"S{i:05d}-USD" for i in range(symbols)]
    for name in names:
        layer.observe(ev.MarkUpdate(name))
    return layer, names, client


async def feed_and_trade(
    runtime: Runtime, names: list[str], audit: list[tuple[float, OrderIntent, Decision]]
) -> None:
    """Marks, API calls and decisions at fixed rates; every decision is kept in ``audit``."""
    layer = runtime.layer
    count = len(names)
    marks = calls = decided = 0
    start = time.perf_counter()
    while True:
        await anyio.sleep(0.001)
        now = time.perf_counter()
        elapsed = now - start
        while marks < MARKS_PER_S * elapsed:
            runtime.observe(ev.MarkUpdate(names[marks % count]))
            marks += 1
        while calls < API_CALLS_PER_S * elapsed:
            runtime.observe(ev.ApiCall(category="orders", ok=True, latency=0.01))
            calls += 1
        while decided < DECIDES_PER_S * elapsed:
            intent = OrderIntent(names[(decided * 7) % count], Side.BUY, QUANTITY)
            audit.append((now, intent, layer.decide(intent)))
            decided += 1


async def scrape(
    layer: ReliabilityLayer, every: float, recorder: Recorder, history: deque[Any]
) -> None:
    """``layer.status()`` every ``every`` seconds (never if it is 0); the pages go to a short
    history."""
    while every > 0:
        await anyio.sleep(every)
        began = time.perf_counter()
        history.append(layer.status())
        if recorder.recording:
            recorder.scrapes.append(time.perf_counter() - began)


async def timer(recorder: Recorder) -> None:
    """Sleep 5 ms again and again; record when each wake was due and when it came."""
    while True:
        asked = time.perf_counter()
        recording = recorder.recording  # only sleeps wholly inside the measured window count
        await anyio.sleep(TIMER)
        woke = time.perf_counter()
        if recording and recorder.recording:
            recorder.wakes.append((asked + TIMER, woke))


def apply_config(config: str, defaults: tuple[int, int, int]) -> None:
    """Start clean, then apply ``config``; the same collection runs first in every config."""
    gc.unfreeze()
    gc.set_threshold(*defaults)
    gc.collect()
    if config in ("freeze", "both"):
        gc.freeze()
    if config in ("thresholds", "both"):
        gc.set_threshold(*TUNED)


async def measure(config: str, args: argparse.Namespace) -> dict[str, Any]:
    defaults = gc.get_threshold()
    layer, names, client = start_up(args.symbols, not args.no_ccxt)
    recorder = Recorder()
    audit: list[tuple[float, OrderIntent, Decision]] = []
    history: deque[Any] = deque(maxlen=STATUS_HISTORY)
    gc.callbacks.append(recorder.on_gc)
    try:
        async with Runtime(layer, alert_sinks=()) as runtime, anyio.create_task_group() as tg:
            apply_config(config, defaults)  # start-up is over: the engine is about to trade
            tracked = len(gc.get_objects())
            frozen = gc.get_freeze_count()
            tg.start_soon(feed_and_trade, runtime, names, audit)
            tg.start_soon(scrape, layer, args.scrape_every, recorder, history)
            tg.start_soon(timer, recorder)
            await anyio.sleep(args.warmup)  # the load runs; the audit trail and history fill
            recorder.recording = True
            await anyio.sleep(args.seconds)
            recorder.recording = False
            # The pause a full collection costs now, under load: what a deferred one still costs.
            began, cpu = time.perf_counter(), time.thread_time()
            gc.collect()
            forced, forced_cpu = time.perf_counter() - began, time.thread_time() - cpu
            tg.cancel_scope.cancel()
    finally:
        gc.callbacks.remove(recorder.on_gc)
    del client
    result = summarize(recorder)
    result.update(
        config=config,
        tracked_objects=tracked,
        frozen_objects=frozen,
        forced_full=forced,
        forced_full_cpu=forced_cpu,
        rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    return result


def summarize(recorder: Recorder) -> dict[str, Any]:
    pauses = sorted(recorder.pauses)  # one thread: they never overlap, so stops sort too
    stops = [stop for _, stop, _ in pauses]

    def collected(due: float, woke: float) -> tuple[float, int]:
        """Seconds spent collecting while this wake was overdue, and the oldest generation
        collected then (-1 for none)."""
        spent, oldest = 0.0, -1
        i = bisect.bisect_right(stops, due)
        while i < len(pauses) and pauses[i][0] < woke:
            start, stop, gen = pauses[i]
            spent += min(stop, woke) - max(start, due)
            oldest = max(oldest, gen)
            i += 1
        return spent, oldest

    wakes = [(woke - due, *collected(due, woke)) for due, woke in recorder.wakes]
    late = sorted(lateness for lateness, _, _ in wakes)
    by_gen = [[stop - start for start, stop, g in pauses if g == gen] for gen in range(3)]
    return {
        "wakes": len(late),
        "p50": percentile(late, 0.50),
        "p99": percentile(late, 0.99),
        "max": late[-1] if late else math.nan,
        "late": sum(1 for lateness, _, _ in wakes if lateness > LATE),
        "late_in_gen2": sum(1 for lateness, _, gen in wakes if lateness > LATE and gen == 2),
        # The worst delay that was not collecting: the scrape, the load, the OS scheduler.
        "max_not_gc": max((lateness - spent for lateness, spent, _ in wakes), default=math.nan),
        "collections": [len(p) for p in by_gen],
        "max_pause": [max(p, default=0.0) for p in by_gen],
        "gen2_total": sum(by_gen[2]),
        "gen2_max_cpu": max(recorder.gen2_cpu, default=0.0),
        "scrape_median": statistics.median(recorder.scrapes) if recorder.scrapes else math.nan,
    }


def percentile(ordered: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of an ascending list."""
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def child(args: argparse.Namespace) -> None:
    async def run() -> dict[str, Any]:
        return await measure(args.config, args)

    print(json.dumps(anyio.run(run)))


# ---------------------------------------------------------------------- parent: the table


def run_config(config: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run ``config`` in a fresh interpreter; returns what it measured."""
    command = [sys.executable, __file__, "--config", config]
    for flag in ("seconds", "warmup", "symbols", "scrape_every"):
        command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    if args.no_ccxt:
        command.append("--no-ccxt")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"{config}: the child process exited with {done.returncode}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def ms(seconds: float, width: int = 7) -> str:
    return f"{seconds * 1000:{width}.1f}"


def ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:5.2f}x" if baseline else "  n/a "


def parent(args: argparse.Namespace) -> None:
    print(
        f"timer lateness of {TIMER * 1000:.0f} ms sleeps, {args.seconds:g} s per config, "
        f"{args.symbols} symbols, ccxt {'off' if args.no_ccxt else 'on'}, status() every "
        f"{args.scrape_every:g} s; tuned thresholds {TUNED}; one process per config; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    results = {config: run_config(config, args) for config in args.configs}
    print(
        f"{'':<11}{'wakes':>6}{'p50':>7}{'p99':>7}{'max':>7}{'late':>6}{'in gen2':>8}"
        f"{'not gc':>8}{'scrape':>8}   timer lateness; late: wakes > {LATE * 1000:.0f} ms"
    )
    for config, r in results.items():
        print(
            f"{config:<11}{r['wakes']:>6}{ms(r['p50'])}{ms(r['p99'])}{ms(r['max'])}"
            f"{r['late']:>6}{r['late_in_gen2']:>8}{ms(r['max_not_gc'], 8)}"
            f"{ms(r['scrape_median'], 8)}"
        )
    print(
        f"{'':<11}{'gen2 n':>7}{'max':>7}{'cpu':>7}{'sum':>7}{'gen1 n':>7}{'max':>7}"
        f"{'gen0 n':>7}{'max':>7}{'full':>7}{'cpu':>7}{'tracked':>9}{'frozen':>8}{'rss MB':>7}"
    )
    for config, r in results.items():
        n, pause = r["collections"], r["max_pause"]
        print(
            f"{config:<11}{n[2]:>7}{ms(pause[2])}{ms(r['gen2_max_cpu'])}{ms(r['gen2_total'])}"
            f"{n[1]:>7}{ms(pause[1])}{n[0]:>7}{ms(pause[0])}{ms(r['forced_full'])}"
            f"{ms(r['forced_full_cpu'])}"
            f"{r['tracked_objects']:>9}{r['frozen_objects']:>8}{r['rss_mb']:>7.0f}"
        )
    base = results.get("default")
    if base is None:
        return
    print("ratios to default, same run (below 1 is better):")
    for config, r in results.items():
        if config != "default":
            print(
                f"  {config:<11}p99 {ratio(r['p99'], base['p99'])}  "
                f"max {ratio(r['max'], base['max'])}  "
                f"gen2 max pause {ratio(r['max_pause'][2], base['max_pause'][2])}  "
                f"full collection cpu "
                f"{ratio(r['forced_full_cpu'], base['forced_full_cpu'])}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=CONFIGS, help="measure one config (child process)")
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    parser.add_argument("--seconds", type=float, default=5.0, help="measured, per config")
    parser.add_argument("--warmup", type=float, default=1.5, help="load before measuring")
    parser.add_argument("--symbols", type=int, default=5_000)
    parser.add_argument("--scrape-every", type=float, default=1.0, help="0: no status()")
    parser.add_argument("--no-ccxt", action="store_true", help="leave ccxt out of start-up")
    args = parser.parse_args()
    if args.config is None:
        parent(args)
    else:
        child(args)


if __name__ == "__main__":
    main()
