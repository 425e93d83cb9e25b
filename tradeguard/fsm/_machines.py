"""Every machine kind's definition, as data (DESIGN §2). Diagrams are generated from these."""

from __future__ import annotations

from tradeguard.fsm._definition import MachineDefinition, Spec
from tradeguard.fsm._states import BreakerState, FeedState, GuardState, HaltState, TradingMode

__all__ = ["BREAKER", "DEFINITIONS", "FEED", "FLEET", "GUARD", "HALT", "MARK", "MODE", "PREVIEW"]

_H, _T, _C = GuardState.HEALTHY, GuardState.TRIPPED, GuardState.COOLDOWN
_N, _U = GuardState.NO_MARK, GuardState.UNSYNCED

# DESIGN §2.1. `reset` is the operator's; from HEALTHY it is a no-op kept for the audit trail.
GUARD = MachineDefinition(
    name="guard",
    description="Every guard but preview and mark_staleness: "
    "HEALTHY -> TRIPPED -> COOLDOWN -> HEALTHY.",
    states=GuardState,
    initial=_H,
    transitions=(
        Spec("trip", (_H, _C), _T),
        Spec("recover", (_T,), _C),
        Spec("expire", (_C,), _H),
        Spec("reset", (_H, _T, _C), _H),
    ),
    unused=frozenset({_N, _U}),
)

# A symbol's mark staleness: the guard machine plus NO_MARK, where every symbol starts (DESIGN
# §2.1: never traded blind). NO_MARK restricts like a stale mark. A reset cannot invent a mark:
# without one the guard goes back to NO_MARK. `trip` from NO_MARK is a preflight's forced trip.
MARK = MachineDefinition(
    name="mark_staleness",
    description="A symbol's mark staleness: NO_MARK until its first mark, then as a guard.",
    states=GuardState,
    initial=_N,
    transitions=(
        Spec("mark", (_N,), _H),
        Spec("trip", (_N, _H, _C), _T),
        Spec("recover", (_T,), _C),
        Spec("expire", (_C,), _H),
        Spec("reset", (_H, _T, _C), _H, "has_mark"),
        Spec("reset", (_N, _T), _N),
    ),
    unused=frozenset({_U}),
)

# Preview never recovers by itself: disabled for the session until an operator reset.
PREVIEW = MachineDefinition(
    name="preview",
    description="Order preview: disabled after repeated failures until an operator reset.",
    states=GuardState,
    initial=_H,
    transitions=(
        Spec("trip", (_H,), _T),
        Spec("reset", (_H, _T), _H),
    ),
    unused=frozenset({_C, _N, _U}),
)

# DESIGN §7: the fleet guard exists once a shell joined a fleet (`FleetJoined`). It restricts
# (REDUCE_ONLY) while UNSYNCED, until the member has read every restriction in force
# (`FleetSynced`), and while TRIPPED: Redis was lost for longer than the grace period, so the
# member can no longer hear its peers' trips. A resync after that goes through COOLDOWN
# (GPT_TRADER_FLEET_MEMBER_TTL_SECONDS). A reset cannot invent a sync: without one (the link
# up and `FleetSynced` seen since) the guard goes back to UNSYNCED.
FLEET = MachineDefinition(
    name="fleet",
    description="Fleet membership: UNSYNCED until synced; TRIPPED when Redis is lost "
    "past the grace period.",
    states=GuardState,
    initial=_U,
    transitions=(
        Spec("sync", (_U,), _H),
        Spec("trip", (_U, _H, _C), _T),
        Spec("recover", (_T,), _C),
        Spec("expire", (_C,), _H),
        Spec("reset", (_U, _H, _T, _C), _H, "synced"),
        Spec("reset", (_U, _H, _T, _C), _U),
    ),
    unused=frozenset({_N}),
)

_CL, _OP, _HO = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN

# DESIGN §2.3, one per endpoint category.
BREAKER = MachineDefinition(
    name="breaker",
    description="Circuit breaker per endpoint category.",
    states=BreakerState,
    initial=_CL,
    transitions=(
        Spec("trip", (_CL, _HO), _OP),
        Spec("expire", (_OP,), _HO),
        Spec("close", (_HO,), _CL),
        Spec("reset", (_CL, _OP, _HO), _CL),
    ),
)

_DIS, _CONNING, _CONN = FeedState.DISCONNECTED, FeedState.CONNECTING, FeedState.CONNECTED
_BO, _DEG, _CLOSED = FeedState.BACKOFF, FeedState.DEGRADED, FeedState.CLOSED

# DESIGN §2.2. Rows sharing a trigger are tried in order: the conditional one first.
FEED = MachineDefinition(
    name="feed",
    description="Websocket feed: reconnect with backoff, DEGRADED after too many attempts.",
    states=FeedState,
    initial=_DIS,
    transitions=(
        Spec("start", (_DIS,), _CONNING),
        Spec("connected", (_CONNING, _DEG), _CONN),
        Spec("disconnected", (_CONNING, _CONN, _DEG), _DEG, "attempts_exhausted"),
        Spec("disconnected", (_CONNING, _CONN), _BO),
        Spec("stale", (_CONN,), _DEG, "attempts_exhausted"),
        Spec("stale", (_CONN,), _BO),
        Spec("retry", (_BO,), _CONNING),
        Spec("close", (_DIS, _CONNING, _CONN, _BO, _DEG), _CLOSED),
    ),
    terminal=frozenset({_CLOSED}),
)

_A, _R, _P = TradingMode.ALLOW, TradingMode.REDUCE_ONLY, TradingMode.PAUSED

# DESIGN §2.4: a scope's own mode; the layer fires the one trigger that names the new mode.
# The global scope starts in ALLOW; a symbol starts where its mark_staleness guard (NO_MARK)
# puts it, so its diagram shows both starts.
MODE = MachineDefinition(
    name="mode",
    description="A scope's own trading mode (a symbol's effective mode also counts global).",
    states=TradingMode,
    initial=_A,
    initial_note="global scope",
    other_starts=(
        (_R, "new symbol, no mark yet (RISK_MARK_STALENESS_ALLOW_REDUCE_ONLY=1)"),
        (_P, "new symbol, no mark yet (RISK_MARK_STALENESS_ALLOW_REDUCE_ONLY=0)"),
    ),
    transitions=(
        Spec("allow", (_R, _P), _A),
        Spec("restrict", (_A, _P), _R),
        Spec("pause", (_A, _R), _P),
    ),
)

_RUN, _HALTED, _REDUCED = HaltState.RUNNING, HaltState.HALTED, HaltState.REDUCED

# An operator halt: HALTED is PAUSED, REDUCED is REDUCE_ONLY (a canary); either can replace the
# other. `resume` of a RUNNING scope is a no-op the layer answers without firing anything.
HALT = MachineDefinition(
    name="operator",
    description="An operator halt on a scope (HALTED: PAUSED, REDUCED: REDUCE_ONLY), "
    "optionally with a time limit.",
    states=HaltState,
    initial=_RUN,
    transitions=(
        Spec("halt", (_RUN, _HALTED, _REDUCED), _HALTED),
        Spec("reduce", (_RUN, _HALTED, _REDUCED), _REDUCED),
        Spec("resume", (_HALTED, _REDUCED), _RUN),
        Spec("expire", (_HALTED, _REDUCED), _RUN),
    ),
)

DEFINITIONS: tuple[MachineDefinition, ...] = (
    GUARD,
    MARK,
    PREVIEW,
    BREAKER,
    FEED,
    MODE,
    HALT,
    FLEET,
)
