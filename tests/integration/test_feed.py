"""The websocket feed over real sockets on 127.0.0.1 (DESIGN §2.2, issue 3).

Every fault the embedded exchange can produce, and what the client, the feed machine and the
trading mode do about it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import ssl
from decimal import Decimal
from pathlib import Path

import anyio
import pytest
from feed_harness import SYMBOLS, running_feed, wait_until
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tradeguard import TradingMode
from tradeguard.fsm.effects import CloseConnection, MaxAttemptsExceeded, Reconnect
from tradeguard.io import FeedClient
from tradeguard.io.exchange import ApiCredentials, ExchangeFeedServer, Market
from tradeguard.io.exchange.auth import build_jwt

pytestmark = pytest.mark.anyio


async def test_connects_subscribes_and_marks_flow() -> None:
    async with running_feed() as feed:
        await wait_until(lambda: all(feed.layer.mode(s) is TradingMode.ALLOW for s in SYMBOLS))
        channels = {(s.channel, s.product_ids) for s in feed.server.subscriptions}
        assert channels == {("ticker", tuple(SYMBOLS)), ("heartbeats", ())}
        ticker = await feed.client.next_ticker()
        assert ticker.symbol in SYMBOLS
        assert ticker.price > Decimal(0)
        assert feed.status()["messages"] > 0
        assert feed.status()["last_message_age"] < 1.0


@pytest.mark.parametrize("code", [1000, 1001, 1011, 1012, 1013, 1006])
async def test_server_close_with_any_code_reconnects_and_resubscribes(code: int) -> None:
    async with running_feed() as feed:
        await feed.server.drop_all(code)
        await wait_until(lambda: feed.server.connections_accepted == 2)
        await wait_until(lambda: feed.status()["state"] == "CONNECTED")
        assert ("CONNECTED", "disconnected", "BACKOFF") in feed.feed_transitions()

        def resent() -> set[str]:
            return {s.channel for s in feed.server.subscriptions if s.connection == 2}

        await wait_until(lambda: resent() == {"ticker", "heartbeats"})
        assert feed.status()["disconnects"] == 1
        reason = feed.status()["last_reason"]
        if code == 1006:
            assert reason in ("connection lost", "close 1006")
        else:
            assert reason.startswith(f"close {code}")
        if code in (1012, 1013):
            assert "retry later" in reason


@pytest.mark.parametrize("status", [503, 429])
async def test_refused_handshake_is_a_failed_attempt_not_a_crash(status: int) -> None:
    async with running_feed(ws_reconnect_max_attempts=0) as feed:  # 0 = unlimited
        feed.server.refuse_handshakes(status)
        await feed.server.drop_all(1012)
        await wait_until(lambda: feed.server.handshakes_refused >= 3)
        assert feed.status()["last_reason"] == f"handshake refused: HTTP {status}"
        assert feed.status()["attempts"] >= 3
        feed.server.refuse_handshakes(None)
        await wait_until(lambda: feed.status()["state"] == "CONNECTED")


async def test_connection_refused_while_the_server_is_down_then_back() -> None:
    async with running_feed(ws_reconnect_max_attempts=0) as feed:
        await feed.server.stop()
        await wait_until(lambda: "connect failed" in feed.status()["last_reason"])
        await wait_until(lambda: feed.status()["attempts"] >= 2)
        await feed.server.start()
        await wait_until(lambda: feed.status()["state"] == "CONNECTED")
        assert feed.server.connections_accepted == 2


async def test_walks_to_degraded_at_the_exact_attempt_count_and_back() -> None:
    async with running_feed(ws_reconnect_max_attempts=3) as feed:
        feed.server.refuse_handshakes(503)
        await feed.server.drop_all(1011)
        await wait_until(lambda: feed.status()["state"] == "DEGRADED")
        reconnects = [e.attempt for e in feed.effects if isinstance(e, Reconnect)]
        assert reconnects == [1, 2, 3]  # the drop after the 3rd failed attempt degrades
        assert feed.layer.guard("websocket").state == "TRIPPED"
        assert feed.layer.mode() is TradingMode.REDUCE_ONLY
        await wait_until(lambda: feed.exceeded != [])  # the callback runs in the executor
        assert feed.exceeded == [("market", 0.3)]
        assert sum(isinstance(e, MaxAttemptsExceeded) for e in feed.effects) == 1
        # DEGRADED keeps trying (the original stopped): let two more attempts fail.
        await wait_until(lambda: feed.server.handshakes_refused >= 5)
        assert feed.status()["state"] == "DEGRADED"
        feed.server.refuse_handshakes(None)
        await wait_until(lambda: feed.status()["state"] == "CONNECTED")
        # The records reach the test through the executor, a moment after the layer moved.
        await wait_until(lambda: feed.feed_transitions()[-1][2] == "CONNECTED")
        path = [dest for _, _, dest in feed.feed_transitions()]
        assert path[:2] == ["CONNECTING", "CONNECTED"]
        assert path[2:5] == ["BACKOFF", "CONNECTING", "BACKOFF"]
        assert "DEGRADED" in path and path[-1] == "CONNECTED"
        assert path[path.index("DEGRADED") :].count("CONNECTING") == 0
        assert feed.layer.guard("websocket").state == "COOLDOWN"
        await wait_until(lambda: feed.layer.mode() is TradingMode.ALLOW)
        assert feed.exceeded == [("market", 0.3)]  # once per DEGRADED entry


async def test_attempt_counter_resets_after_a_stable_connection() -> None:
    async with running_feed(ws_reconnect_reset_seconds=0.2) as feed:
        feed.server.refuse_handshakes(503)
        await feed.server.drop_all(1011)
        await wait_until(lambda: feed.status()["attempts"] >= 2)
        feed.server.refuse_handshakes(None)
        await wait_until(lambda: feed.status()["state"] == "CONNECTED")
        # The attempts made before it connected, read from the effects (the counter itself
        # may already have been reset by the time a loaded machine looks at it).
        assert max(e.attempt for e in feed.effects if isinstance(e, Reconnect)) >= 2
        await wait_until(lambda: feed.status()["attempts"] == 0)
        assert feed.status()["state"] == "CONNECTED"


async def test_silent_stream_is_closed_and_reconnected() -> None:
    async with running_feed(ws_message_stale_seconds=0.4) as feed:
        feed.server.go_silent()
        await wait_until(lambda: any(isinstance(e, CloseConnection) for e in feed.effects))
        assert ("CONNECTED", "stale", "BACKOFF") in feed.feed_transitions()
        assert feed.status()["last_reason"] == "stale"
        feed.server.go_silent(False)
        await wait_until(lambda: feed.server.connections_accepted >= 2)
        await wait_until(lambda: feed.status()["state"] == "CONNECTED")
        before = feed.status()["messages"]
        await wait_until(lambda: feed.status()["messages"] > before)


async def test_sequence_gap_is_reported_and_counted() -> None:
    async with running_feed() as feed:
        feed.server.skip_sequence(3)
        await wait_until(lambda: feed.gaps != [])
        (name, expected, received), *_ = feed.gaps
        assert name == "market"
        assert received == expected + 3
        assert feed.status()["sequence_gaps"] == len(feed.gaps) == 1
        assert feed.status()["state"] == "CONNECTED"


async def test_malformed_json_is_counted_and_the_stream_continues() -> None:
    async with running_feed() as feed:
        feed.server.send_garbage(2)
        await wait_until(lambda: feed.status()["malformed_messages"] == 2)
        before = feed.status()["messages"]
        await wait_until(lambda: feed.status()["messages"] > before + 2)
        assert feed.status()["state"] == "CONNECTED"
        assert feed.status()["disconnects"] == 0


async def test_an_idle_consumer_keeps_the_latest_ticker_of_every_symbol() -> None:
    # Issue 15: the buffer conflates by symbol, so an unread ticker replaced by a newer one
    # for the same symbol is not a drop; with room for every symbol nothing is lost.
    async with running_feed(queue_size=len(SYMBOLS)) as feed:
        await wait_until(lambda: feed.client.tickers_conflated >= 10)
        assert feed.client.buffered == len(SYMBOLS)
        assert feed.status()["dropped_messages"] == 0
        latest = [await feed.client.next_ticker() for _ in SYMBOLS]
        assert sorted(t.symbol for t in latest) == sorted(SYMBOLS)


async def test_more_symbols_than_queue_size_drops_the_least_recent_and_stays_bounded() -> None:
    # Was "drops the oldest" (a FIFO of tickers); now a drop is a latest ticker lost unread,
    # evicted because `queue_size` other symbols were already buffered.
    async with running_feed(queue_size=1) as feed:
        await wait_until(lambda: feed.status()["dropped_messages"] >= 10)
        client = feed.client
        assert client.buffered == 1
        assert client.tickers_dropped == feed.status()["dropped_messages"]
        accounted = client.tickers_dropped + client.tickers_conflated + client.buffered
        assert accounted == client.tickers_received
        assert (await client.next_ticker()).symbol in SYMBOLS


def _open_sockets() -> int:
    """Sockets this process holds open (Linux: /proc/self/fd)."""
    fds = Path("/proc/self/fd")
    count = 0
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            count += os.readlink(fd).startswith("socket:")
    return count


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="counts sockets through /proc")
async def test_no_task_or_socket_is_left_after_exit() -> None:
    tasks_before = set(asyncio.all_tasks())
    sockets_before = _open_sockets()
    async with running_feed() as feed:
        await feed.server.drop_all(1011)
        await wait_until(lambda: feed.server.connections_accepted == 2)
        assert _open_sockets() >= sockets_before + 3  # listener, client and server ends
    assert {t for t in asyncio.all_tasks() if not t.done()} <= tasks_before
    assert _open_sockets() == sockets_before
    assert feed.server.open_connections == 0
    assert feed.layer.feed_state("market") == "CLOSED"


async def test_client_rejects_bad_arguments() -> None:
    from tradeguard import ReliabilityLayer, Settings
    from tradeguard.io import Runtime

    runtime = Runtime(ReliabilityLayer(Settings()))
    with pytest.raises(ValueError, match="product_ids"):
        FeedClient(runtime, "ws://127.0.0.1:1", [])
    with pytest.raises(ValueError, match="queue_size"):
        FeedClient(runtime, "ws://127.0.0.1:1", ["BTC-USD"], queue_size=0)
    with pytest.raises(ValueError, match="ws://"):
        FeedClient(runtime, "http://127.0.0.1:1", ["BTC-USD"])


async def test_tls_snapshot_then_updates_unsubscribe_and_a_forged_jwt() -> None:
    credentials = ApiCredentials.generate()
    market = Market(SYMBOLS, random.Random(0))
    async with ExchangeFeedServer(
        market, tick_interval=0.02, tls=True, credentials=credentials
    ) as server:
        assert server.url.startswith("wss://") and server.ca_file is not None
        context = ssl.create_default_context(cafile=str(server.ca_file))
        async with connect(server.url, ssl=context) as ws:
            forged = build_jwt(ApiCredentials.generate(), None)
            bad = {"type": "subscribe", "channel": "ticker", "product_ids": SYMBOLS, "jwt": forged}
            await ws.send(json.dumps(bad))
            with anyio.fail_after(5):
                refused = json.loads(await ws.recv())
            assert refused["type"] == "error" and "kid" in refused["message"]
            good = {**bad, "jwt": build_jwt(credentials, None)}
            await ws.send(json.dumps(good))
            with anyio.fail_after(5):
                acked = json.loads(await ws.recv())
                first = json.loads(await ws.recv())
                second = json.loads(await ws.recv())
            assert acked["events"][0]["subscriptions"]["ticker"] == sorted(SYMBOLS)
            assert first["events"][0]["type"] == "snapshot"
            assert second["events"][0]["type"] == "update"
            assert "best_bid" in second["events"][0]["tickers"][0]
            await ws.send(json.dumps({**good, "type": "unsubscribe"}))
            with anyio.fail_after(5):
                while (message := json.loads(await ws.recv()))["channel"] != "subscriptions":
                    pass
            assert message["events"][0]["subscriptions"]["ticker"] == []
        ca_file = server.ca_file
    assert not ca_file.exists()


async def test_a_refused_handshake_is_not_logged_as_a_server_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # websockets 13 (pinned by the official SDK) logs our own refusals as ERROR with a
    # traceback; the fault control working is not a server error.
    async with ExchangeFeedServer(Market(SYMBOLS, random.Random(1))) as server:
        server.refuse_handshakes(503)
        with pytest.raises(InvalidStatus):
            async with connect(server.url):
                pass
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_the_server_forgets_closed_connections_subscriptions() -> None:
    # Issue 15: it used to keep every subscribe request it ever received.
    market = Market(SYMBOLS, random.Random(3))
    subscribe = json.dumps({"type": "subscribe", "channel": "ticker", "product_ids": SYMBOLS})
    async with ExchangeFeedServer(market, tick_interval=1.0, subscription_history=8) as server:
        with anyio.fail_after(60):
            for _ in range(1000):
                async with connect(server.url) as ws:
                    await ws.send(subscribe)
                    await ws.recv()  # the acknowledgement: the request was recorded
            await wait_until(lambda: server.open_connections == 0)
        assert server.connections_accepted == 1000
        assert server.subscriptions_kept == 8
        assert [s.connection for s in server.subscriptions] == list(range(993, 1001))


async def test_load_an_idle_consumer_loses_no_latest_ticker_at_20000_messages_a_second() -> None:
    # Issue 15 load test: 4,000 one-ticker messages over 50 symbols at 20,000 msg/s with no
    # consumer reading; afterwards every symbol's buffered ticker is the last one sent.
    import time

    from tradeguard import ReliabilityLayer, Settings
    from tradeguard.io import Runtime

    symbols = [f"L{i:02d}-USD" for i in range(50)]
    layer = ReliabilityLayer(Settings(), time.monotonic, rng=random.Random(4))
    market = Market(symbols, random.Random(5))
    async with (
        ExchangeFeedServer(market, tick_interval=3600, heartbeat_interval=3600) as server,
        Runtime(layer) as runtime,
    ):
        client = FeedClient(runtime, server.url, symbols, queue_size=len(symbols))
        await runtime.start(client.run)
        await wait_until(lambda: client.buffered == len(symbols))  # the snapshot
        received = client.tickers_received
        with anyio.fail_after(30):
            last = await server.send_burst(4000, rate=20_000)
            await wait_until(lambda: client.tickers_received == received + 4000, timeout=30)
        assert layer.status()["feeds"]["market"]["dropped_messages"] == 0
        assert client.tickers_dropped == 0
        latest = {t.symbol: t.price for t in [await client.next_ticker() for _ in symbols]}
        assert latest == last
