"""`Fleet`: members of one account share their restrictions through a Redis server (issue 14).

Theory of operation. The pure core decides what a peer's restriction means (`PeerRestriction`,
`PeerLifted`, `PeerHeartbeat`, the `fleet` guard: DESIGN §2.1, issue 14); this module is the
I/O around it, on the ``redis`` package's asyncio client (the ``tradeguard[fleet]`` extra).
Keys, for fleet ``N`` (nothing outside the namespace is read or written):

* ``tradeguard:N:stream``: a stream (``XADD ... MAXLEN ~ 10000``) of changes, one field
  ``msg`` holding the JSON of `FleetMessage` (``restrict``, ``lift`` or ``heartbeat``);
* ``tradeguard:N:restrictions``: a hash of every restriction in force, field
  ``member|guard|scope`` -> the JSON of its ``restrict`` message (``HDEL`` on lift), for joiners;
* ``tradeguard:N:members``: a hash member -> ``{"heartbeat": wall, "pid": ..., "host": ...}``.

A `Fleet` observes `FleetJoined` when it starts (the `fleet` guard restricts, UNSYNCED), then
runs one connection at a time: ``PING`` -> `FleetLink` ``up=True``; a sync (the stream's last
id, then ``HGETALL`` of members and restrictions -> `PeerHeartbeat` / `PeerRestriction`, and
`PeerLifted` for every peer restriction held that the hash no longer has) -> `FleetSynced`;
then, until the connection fails, three tasks: the follower (``XREAD BLOCK`` from the synced
id), the publisher (after every transition of this layer, the diff of
`ReliabilityLayer.local_restrictions` against what the hash holds for this member, written as
``HSET``/``HDEL`` + ``XADD`` in one ``MULTI``) and the heartbeat (every ttl/3). A Redis or
socket error ends the connection: `FleetLink` ``up=False`` once per outage (the core trips the
`fleet` guard after its grace period), a jittered backoff (the feed's policy, from the
``GPT_TRADER_WS_RECONNECT_*`` knobs, with the injected random source), and a fresh connection
and full resync. Every socket read has a timeout, so a server that stops answering (SIGSTOP)
is a lost connection too.

Bad input never loosens anything: every stream entry and hash value is parsed strictly by
`parse_message` (version, type, member, guard name, scope, mode, state, finite times, no
foreign fields); a bad one is ignored and counted under its reason
(``gpt_trader_fleet_messages_rejected_total{reason}``), and a member never crashes on it. The
core only ever hears REDUCE_ONLY or PAUSED from a peer. `decide()` never waits on any of this:
observations are applied synchronously through the runtime, as the feed's are.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import re
import socket
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, Self, final

import anyio
from anyio.abc import TaskStatus

from tradeguard.config import Settings
from tradeguard.errors import InvalidObservation
from tradeguard.fsm import TradingMode
from tradeguard.fsm import events as ev
from tradeguard.fsm._backoff import BackoffPolicy
from tradeguard.fsm.events import PEER_GUARDS
from tradeguard.io.runtime import Runtime

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from tradeguard.io.metrics import Metrics

__all__ = [
    "OPERATOR",
    "OPERATOR_LOG",
    "REJECT_REASONS",
    "SYMBOL_PATTERN",
    "Fleet",
    "FleetKeys",
    "FleetMessage",
    "MessageRejected",
    "default_member",
    "encode_message",
    "parse_member",
    "parse_message",
    "redis_errors",
]

log = logging.getLogger("tradeguard.io.fleet")

OPERATOR: Final = "operator"
"""The member (and guard) name the ``tradeguard halt`` / ``resume`` commands publish as."""

OPERATOR_LOG: Final = 1000
"""How many operator actions ``tradeguard:N:operator_log`` keeps."""

VERSION: Final = 1
STREAM_MAXLEN: Final = 10_000

MessageType = Literal["restrict", "lift", "heartbeat"]
REJECT_REASONS: Final = (
    "json",  # not UTF-8 JSON, not an object, or a stream entry without its one `msg` field
    "fields",  # a missing or foreign field, or a hash field that names another restriction
    "version",
    "type",
    "member",
    "guard",
    "scope",
    "mode",
    "state",
    "time",
    "invalid",  # well-formed, but the core refused the observation
)
"""The ``reason`` label values of ``*_fleet_messages_rejected_total``."""

# Names travel into hash fields (`member|guard|scope`), metric labels and reasons
# (`guard@member`): none may carry the separators.
_MEMBER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}")
_GUARD = re.compile(r"[a-z][a-z0-9_]{0,63}(?::[A-Za-z0-9_.\-]{1,64})?")
SYMBOL_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-/:_]{0,63}")
_STATE = re.compile(r"[A-Z][A-Z_]{0,31}")
_FLEET_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
_MODES: Final = {"REDUCE_ONLY": TradingMode.REDUCE_ONLY, "PAUSED": TradingMode.PAUSED}
_ALL_FIELDS: Final = frozenset(
    {"v", "type", "member", "guard", "scope", "mode", "state", "lifts_at", "at"}
)
_REQUIRED: Final[Mapping[str, frozenset[str]]] = {
    "restrict": _ALL_FIELDS,
    "lift": frozenset({"v", "type", "member", "guard", "scope", "at"}),
    "heartbeat": frozenset({"v", "type", "member", "at"}),
}
_STREAM_FIELD: Final = b"msg"


@final
class MessageRejected(ValueError):
    """A fleet message that is not exactly what the wire format allows (see `parse_message`).

    Never leaves this module's tasks: the message is ignored and counted under ``reason``.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"fleet message rejected ({reason}): {detail}")
        self.reason = reason
        self.detail = detail


@final
@dataclass(frozen=True, slots=True)
class FleetKeys:
    """The Redis keys of one fleet (every key is namespaced by the fleet's name)."""

    name: str

    def __post_init__(self) -> None:
        if not _FLEET_NAME.fullmatch(self.name):
            raise ValueError(f"fleet name must match [A-Za-z0-9_.-]+, got {self.name!r}")

    @property
    def stream(self) -> str:
        """The stream of changes."""
        return f"tradeguard:{self.name}:stream"

    @property
    def restrictions(self) -> str:
        """The hash of every restriction in force."""
        return f"tradeguard:{self.name}:restrictions"

    @property
    def members(self) -> str:
        """The hash of members and their last heartbeat."""
        return f"tradeguard:{self.name}:members"

    @property
    def operator_log(self) -> str:
        """A list of the operator's fleet-wide halts and resumes (newest first), with reasons:
        the wire format carries no free text, so reasons live here, for people."""
        return f"tradeguard:{self.name}:operator_log"


@final
@dataclass(frozen=True, slots=True)
class FleetMessage:
    """One message of the fleet's wire format (version 1); wall times in epoch seconds.

    ``guard``/``scope`` are set for ``restrict`` and ``lift``; ``mode``, ``state`` and
    ``lifts_at`` for ``restrict`` only (``lifts_at`` is ``None`` while the restriction is
    open-ended: its fault is present, or a halt without ttl).
    """

    type: MessageType
    member: str
    at: float
    guard: str | None = None
    scope: str | None = None
    mode: TradingMode | None = None
    state: str | None = None
    lifts_at: float | None = None

    @property
    def field(self) -> str:
        """The restrictions hash field of this message's restriction."""
        return restriction_field(self.member, self.guard or "", self.scope)

    def to_json(self) -> str:
        """The wire JSON (`encode_message`)."""
        return encode_message(self)


def restriction_field(member: str, guard: str, scope: str | None) -> str:
    """``member|guard|scope`` (scope empty for global): a field of the restrictions hash."""
    return f"{member}|{guard}|{scope or ''}"


def encode_message(message: FleetMessage) -> str:
    """The JSON of ``message`` as the wire format wants it (only its type's fields)."""
    body: dict[str, Any] = {"v": VERSION, "type": message.type, "member": message.member}
    if message.type != "heartbeat":
        body["guard"] = message.guard
        body["scope"] = message.scope
    if message.type == "restrict":
        assert message.mode is not None  # built by this module only with a mode
        body["mode"] = message.mode.name
        body["state"] = message.state
        body["lifts_at"] = message.lifts_at
    body["at"] = message.at
    return json.dumps(body, separators=(",", ":"), allow_nan=False)


def parse_message(raw: bytes | str) -> FleetMessage:
    """Parse one wire message strictly.

    Raises:
        MessageRejected: anything but a version-1 object with exactly its type's fields, a
            member and guard of the allowed shapes, a scope that is a symbol or null, a mode of
            REDUCE_ONLY or PAUSED, an UPPER_CASE state and finite positive times.
    """
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        body = json.loads(text, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as err:  # JSONDecodeError is a ValueError
        raise MessageRejected("json", f"not JSON: {err}") from None
    if not isinstance(body, dict):
        raise MessageRejected("json", f"not a JSON object: {type(body).__name__}")
    foreign = sorted(set(body) - _ALL_FIELDS)
    if foreign:
        raise MessageRejected("fields", f"foreign field(s) {foreign!r}")
    version = body.get("v")
    if type(version) is not int or version != VERSION:
        raise MessageRejected("version", f"v must be {VERSION}, got {version!r}")
    kind = body.get("type")
    if not isinstance(kind, str) or kind not in _REQUIRED:
        raise MessageRejected("type", f"type must be restrict, lift or heartbeat, got {kind!r}")
    fields = set(body)
    if fields != _REQUIRED[kind]:
        # A heartbeat or lift carrying restriction fields is as suspect as a missing one.
        raise MessageRejected("fields", f"{kind} needs exactly {sorted(_REQUIRED[kind])!r}")
    member = _member(body["member"])
    at = _time(body["at"], "at")
    if kind == "heartbeat":
        return FleetMessage("heartbeat", member, at)
    guard = body["guard"]
    if not isinstance(guard, str) or not _GUARD.fullmatch(guard) or guard not in PEER_GUARDS:
        raise MessageRejected("guard", f"guard must be one of {sorted(PEER_GUARDS)}, got {guard!r}")
    scope = body["scope"]
    if scope is not None and not (isinstance(scope, str) and SYMBOL_PATTERN.fullmatch(scope)):
        raise MessageRejected("scope", f"scope must be a symbol or null, got {scope!r}")
    takes = PEER_GUARDS[guard]
    if (takes == "global" and scope is not None) or (takes == "symbol" and scope is None):
        raise MessageRejected("scope", f"guard {guard!r} is {takes}, got scope {scope!r}")
    if kind == "lift":
        return FleetMessage("lift", member, at, guard=guard, scope=scope)
    mode_name = body["mode"]
    mode = _MODES.get(mode_name) if isinstance(mode_name, str) else None
    if mode is None:
        raise MessageRejected("mode", f"mode must be REDUCE_ONLY or PAUSED, got {mode_name!r}")
    state = body["state"]
    if not isinstance(state, str) or not _STATE.fullmatch(state):
        raise MessageRejected("state", f"state must be an UPPER_CASE name, got {state!r}")
    lifts_at = None if body["lifts_at"] is None else _time(body["lifts_at"], "lifts_at")
    return FleetMessage(
        "restrict", member, at, guard=guard, scope=scope, mode=mode, state=state, lifts_at=lifts_at
    )


def parse_member(raw: bytes | str) -> float:
    """The heartbeat (wall time) of a members-hash value ``{"heartbeat": t, "pid", "host"}``.

    Raises:
        MessageRejected: not such an object, or a heartbeat that is not a finite time.
    """
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        body = json.loads(text, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as err:
        raise MessageRejected("json", f"not JSON: {err}") from None
    if not isinstance(body, dict):
        raise MessageRejected("json", f"not a JSON object: {type(body).__name__}")
    foreign = sorted(set(body) - {"heartbeat", "pid", "host"})
    if foreign or "heartbeat" not in body:
        raise MessageRejected("fields", f"a member needs heartbeat (pid, host), got {sorted(body)}")
    return _time(body["heartbeat"], "heartbeat")


def default_member() -> str:
    """``host:pid``: unique per process, so a restarted process is a new member."""
    host = re.sub(r"[^A-Za-z0-9_.\-]", "-", socket.gethostname()) or "host"
    return f"{host}:{os.getpid()}"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity: Python's json would accept them


def _member(value: object) -> str:
    if not isinstance(value, str) or not _MEMBER.fullmatch(value):
        raise MessageRejected("member", f"member must match {_MEMBER.pattern}, got {value!r}")
    return value


def _time(value: object, name: str) -> float:
    # bool is an int: `true` is no time.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MessageRejected("time", f"{name} must be seconds since the epoch, got {value!r}")
    seconds = float(value)
    if not (math.isfinite(seconds) and seconds > 0):
        raise MessageRejected("time", f"{name} must be finite and > 0, got {value!r}")
    return seconds


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def connect(url: str, *, timeout: float) -> Redis:
    """A client for ``url`` whose every connect and read gives up after ``timeout`` seconds
    and never retries by itself (the caller's backoff does)."""
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    client: Redis = Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
        decode_responses=False,
        health_check_interval=0,
    )
    return client


def redis_errors() -> tuple[type[BaseException], ...]:
    """What a lost or failing Redis raises: caught at the edge and turned into FleetLink."""
    from redis.exceptions import RedisError

    return (RedisError, OSError, TimeoutError)


@final
class Fleet(anyio.AsyncContextManagerMixin):
    """This member's link to its fleet: applies peers' restrictions, publishes its own.

    Use as ``async with Fleet(runtime, settings) as fleet:`` inside the runtime's block (the
    `Engine` does when ``GPT_TRADER_FLEET_REDIS_URL`` is set). Entering observes `FleetJoined`
    and returns at once: until the first sync the `fleet` guard keeps the member REDUCE_ONLY
    (`wait_synced` waits for it). Leaving cancels and awaits every task and closes the
    connection; this member's restrictions stay in the hash for the dead-member rule.

    Args:
        runtime: the running runtime of this member's layer.
        settings: the ``GPT_TRADER_FLEET_*`` knobs (and the reconnect backoff knobs).
        member: this member's name; ``None``: ``settings.fleet_member``, else `default_member`.
        metrics: where the fleet series go, or ``None``.
        rng: the reconnect jitter's random source.
        wall_clock: epoch seconds for published times (the layer's wall clock).

    Raises:
        ValueError: no Redis URL in ``settings``, or a bad member or fleet name.
    """

    def __init__(
        self,
        runtime: Runtime,
        settings: Settings,
        *,
        member: str | None = None,
        metrics: Metrics | None = None,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not settings.fleet_redis_url:
            raise ValueError("Fleet needs GPT_TRADER_FLEET_REDIS_URL (settings.fleet_redis_url)")
        chosen = member if member is not None else settings.fleet_member or default_member()
        if not _MEMBER.fullmatch(chosen) or chosen == OPERATOR:
            raise ValueError(
                f"fleet member must match {_MEMBER.pattern} and not be {OPERATOR!r}, got {chosen!r}"
            )
        self.runtime = runtime
        self.settings = settings
        self.member = chosen
        self.keys = FleetKeys(settings.fleet_name)
        self.url = settings.fleet_redis_url
        self._metrics = metrics
        self._rng = rng if rng is not None else random.Random()
        self._wall = wall_clock
        self._backoff = BackoffPolicy.from_settings(settings)
        ttl = settings.fleet_member_ttl_seconds
        self._heartbeat_every = ttl / 3
        # Every read gives up well inside the grace period, so a silent server is noticed in
        # time; XREAD blocks for half of it (the server answers an empty block by then).
        self._io_timeout = max(0.1, min(settings.fleet_lost_grace_seconds / 2, 5.0))
        self._block_ms = max(10, int(self._io_timeout * 500))
        self._up = False
        self._reported_down = False
        self._synced = anyio.Event()
        self._dirty = anyio.Event()
        self._last_id: bytes = b"0-0"
        self._applied: set[tuple[str, str, str | None]] = set()  # peers' restrictions held
        self._published: dict[str, FleetMessage] = {}  # what the hash holds for this member
        self._heartbeats: dict[str, float] = {}
        self.rejected: dict[str, int] = {}

    # ------------------------------------------------------------------ reads

    @property
    def up(self) -> bool:
        """True while a connection to Redis is open and synced."""
        return self._up

    @property
    def synced(self) -> bool:
        """True once the first sync finished (it stays True across later outages)."""
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        """Return once the first sync finished (the `fleet` guard left UNSYNCED)."""
        await self._synced.wait()

    @property
    def members(self) -> dict[str, float]:
        """Every member seen (this one included) -> its last heartbeat (wall time)."""
        return dict(self._heartbeats)

    @property
    def peer_restrictions(self) -> frozenset[tuple[str, str, str | None]]:
        """(member, guard, scope) of every peer restriction this member applied."""
        return frozenset(self._applied)

    # ------------------------------------------------------------------ lifecycle

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[Self]:
        # Subscribed before anything runs: no transition of this layer goes unpublished.
        records = self.runtime.subscribe()
        self.runtime.observe(ev.FleetJoined(member=self.member))
        self._dirty.set()
        async with records, anyio.create_task_group() as tg:
            tg.start_soon(self._watch_records, records)
            await tg.start(self._run)
            try:
                yield self
            finally:
                tg.cancel_scope.cancel("fleet closed")

    async def _watch_records(self, records: Any) -> None:
        async for _ in records:
            self._dirty.set()  # the publisher recomputes the diff; records coalesce

    async def _run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        errors = redis_errors()
        attempt = 0
        while True:
            client = connect(self.url, timeout=self._io_timeout)
            try:
                try:
                    await client.ping()
                    await self._session(client)
                except* errors as group:  # cancellation passes through
                    log.warning("fleet %s: Redis connection lost: %r", self.keys.name, group)
            finally:
                # The connection may be gone already: closing it cannot fail the member.
                with anyio.move_on_after(1, shield=True), contextlib.suppress(*errors):
                    await client.aclose()
            if self.runtime.closed:
                return
            if self._up:
                attempt = 0  # this connection synced: the next outage starts afresh
            self._link_down()
            await anyio.sleep(self._backoff.delay(attempt, self._rng))
            attempt += 1

    async def _session(self, client: Redis) -> None:
        if self.runtime.closed:
            return
        self.runtime.observe(ev.FleetLink(up=True))
        self._reported_down = False
        await self._sync(client)
        self._up = True
        self._set_link_gauge(True)
        self._synced.set()
        self._dirty.set()  # reconcile this member's entries with what the hash holds
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._follow, client)
            tg.start_soon(self._publish_loop, client)
            tg.start_soon(self._heartbeat_loop, client)

    def _link_down(self) -> None:
        self._up = False
        self._set_link_gauge(False)
        if not self._reported_down and not self.runtime.closed:
            self._reported_down = True
            self.runtime.observe(ev.FleetLink(up=False))

    # ------------------------------------------------------------------ reading the fleet

    async def _sync(self, client: Redis) -> None:
        """Read every member and restriction in force; lift what the hash no longer has."""
        last = await client.xrevrange(self.keys.stream, "+", "-", count=1)
        newest = last[0][0] if last else None
        self._last_id = newest if isinstance(newest, bytes) else b"0-0"
        for raw_member, raw in (await client.hgetall(self.keys.members)).items():
            name = _text(raw_member)
            try:
                member, beat = _member(name), parse_member(raw)
            except MessageRejected as err:
                self._reject(err)
                continue
            self._heartbeat(member, beat)
        seen: set[tuple[str, str, str | None]] = set()
        mine: dict[str, FleetMessage] = {}
        for raw_field, raw in (await client.hgetall(self.keys.restrictions)).items():
            try:
                message = parse_message(raw)
                if message.type != "restrict" or message.field != _text(raw_field):
                    raise MessageRejected("fields", f"hash field {raw_field!r} != its message")
            except MessageRejected as err:
                self._reject(err)
                continue
            if message.member == self.member:
                mine[message.field] = message
            elif self._restrict(message):
                seen.add((message.member, message.guard or "", message.scope))
        for member, guard, scope in sorted(self._applied - seen, key=repr):
            self._lift(member, guard, scope)
        self._published = mine
        self.runtime.observe(ev.FleetSynced())
        self._update_gauges()

    async def _follow(self, client: Redis) -> None:
        stream = self.keys.stream
        while True:
            reply = await client.xread({stream: self._last_id}, block=self._block_ms, count=500)
            for _, entries in _entries(reply):
                for entry_id, fields in entries:
                    self._last_id = entry_id
                    self._receive(fields)

    def _receive(self, fields: Any) -> None:
        try:
            if not isinstance(fields, dict) or set(fields) != {_STREAM_FIELD}:
                raise MessageRejected("json", "a stream entry has exactly one field, msg")
            message = parse_message(fields[_STREAM_FIELD])
        except MessageRejected as err:
            self._reject(err)
            return
        if message.member == self.member:
            return  # our own, echoed back
        if self._metrics is not None and message.type != "heartbeat":
            self._metrics.observe_fleet_lag(max(0.0, self._wall() - message.at))
        match message.type:
            case "heartbeat":
                self._heartbeat(message.member, message.at)
            case "restrict":
                self._restrict(message)
            case "lift":
                self._lift(message.member, message.guard or "", message.scope)
        self._update_gauges()

    def _restrict(self, message: FleetMessage) -> bool:
        assert message.mode is not None and message.state is not None  # parsed as restrict
        guard = message.guard or ""
        try:
            self.runtime.observe(
                ev.PeerRestriction(
                    member=message.member,
                    guard=guard,
                    scope=message.scope,
                    mode=message.mode,
                    state=message.state,
                    lifts_at=message.lifts_at,
                    # Publishing is a sign of life as good as a heartbeat.
                    heartbeat_at=max(self._heartbeats.get(message.member, 0.0), message.at),
                )
            )
        except InvalidObservation as err:  # well-formed, but not a restriction the core takes
            self._reject(MessageRejected("invalid", str(err)))
            return False
        self._applied.add((message.member, guard, message.scope))
        return True

    def _lift(self, member: str, guard: str, scope: str | None) -> None:
        try:
            self.runtime.observe(ev.PeerLifted(member=member, guard=guard, scope=scope))
        except InvalidObservation as err:
            self._reject(MessageRejected("invalid", str(err)))
            return
        self._applied.discard((member, guard, scope))

    def _heartbeat(self, member: str, at: float) -> None:
        if at <= self._heartbeats.get(member, 0.0):
            return  # an older heartbeat never moves a member's liveness back or forth
        self._heartbeats[member] = at
        if member == self.member:
            return
        try:
            self.runtime.observe(ev.PeerHeartbeat(member=member, at=at))
        except InvalidObservation as err:
            self._reject(MessageRejected("invalid", str(err)))

    def _reject(self, err: MessageRejected) -> None:
        self.rejected[err.reason] = self.rejected.get(err.reason, 0) + 1
        log.warning("fleet %s: ignored a message: %s", self.keys.name, err)
        if self._metrics is not None:
            self._metrics.count_fleet_rejected(err.reason)

    # ------------------------------------------------------------------ writing the fleet

    async def _publish_loop(self, client: Redis) -> None:
        while True:
            await self._dirty.wait()
            self._dirty = anyio.Event()
            await self._publish(client)

    async def _publish(self, client: Redis) -> None:
        """Make the hash hold exactly this member's restrictions in force now."""
        now = self._wall()
        wanted: dict[str, FleetMessage] = {}
        for restriction in self.runtime.layer.local_restrictions():
            message = FleetMessage(
                "restrict",
                self.member,
                now,
                guard=restriction.guard,
                scope=restriction.scope,
                mode=restriction.mode,
                state=str(restriction.state),
                lifts_at=restriction.lifts_at,
            )
            wanted[message.field] = message
        changed = [m for field, m in wanted.items() if not _same(self._published.get(field), m)]
        gone = [m for field, m in self._published.items() if field not in wanted]
        if not changed and not gone:
            return
        async with client.pipeline(transaction=True) as pipe:
            for message in changed:
                text = message.to_json()
                pipe.hset(self.keys.restrictions, message.field, text)
                pipe.xadd(self.keys.stream, {"msg": text}, maxlen=STREAM_MAXLEN)
            for old in gone:
                lift = FleetMessage("lift", self.member, now, guard=old.guard, scope=old.scope)
                pipe.hdel(self.keys.restrictions, old.field)
                pipe.xadd(self.keys.stream, {"msg": lift.to_json()}, maxlen=STREAM_MAXLEN)
            await pipe.execute()
        self._published = wanted

    async def _heartbeat_loop(self, client: Redis) -> None:
        host, pid = socket.gethostname(), os.getpid()
        while True:
            now = self._wall()
            record = json.dumps({"heartbeat": now, "pid": pid, "host": host})
            beat = FleetMessage("heartbeat", self.member, now).to_json()
            async with client.pipeline(transaction=True) as pipe:
                pipe.hset(self.keys.members, self.member, record)
                pipe.xadd(self.keys.stream, {"msg": beat}, maxlen=STREAM_MAXLEN)
                await pipe.execute()
            self._heartbeats[self.member] = now
            self._update_gauges()
            await anyio.sleep(self._heartbeat_every)

    # ------------------------------------------------------------------ metrics

    def _update_gauges(self) -> None:
        if self._metrics is not None:
            self._metrics.set_fleet(members=len(self._heartbeats), peers=len(self._applied))

    def _set_link_gauge(self, up: bool) -> None:
        if self._metrics is not None:
            self._metrics.set_fleet_link(up)


def _same(old: FleetMessage | None, new: FleetMessage) -> bool:
    """The same restriction, whatever the time it was published at."""
    return old is not None and (old.mode, old.state, old.lifts_at) == (
        new.mode,
        new.state,
        new.lifts_at,
    )


def _entries(reply: Any) -> list[tuple[Any, list[tuple[bytes, Any]]]]:
    """XREAD's reply as (stream, [(id, fields)]), for RESP2 (a list) and RESP3 (a dict)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return list(reply.items())
    return [(stream, entries) for stream, entries in reply]
