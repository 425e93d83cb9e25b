"""The embedded exchange's websocket half: tickers and heartbeats, with fault controls.

Listens on 127.0.0.1 (an ephemeral port unless told otherwise) and speaks the Coinbase
Advanced Trade market-data protocol (`tradeguard.io._coinbase`). Tests and the demo break it
on purpose through its controls: drop every connection with a close code, refuse handshakes
with an HTTP status, go silent, skip sequence numbers, send garbage, stop and restart the
listener on the same port.

Like the venue, a ticker subscription is answered with a ``snapshot`` ticker event for the
products it adds (frozen ones left out: they get no ticker), then ``update`` events;
``unsubscribe`` removes products or heartbeats. Ticker events carry the venue's fields
(``best_bid``, ``best_ask``, ``volume_24_h``, ``low_24_h``, ``high_24_h``,
``price_percent_chg_24_h``, ...), "24 hours" meaning since the market started. With
``tls`` it serves ``wss://``; with ``credentials`` a subscribe carrying a ``jwt`` must carry
one signed by that key (market-data channels need none, as at the venue).

Subscribe requests are kept for assertions (`subscriptions`): all of an open connection's,
and of closed connections only the last `subscription_history` records, so reconnect churn
cannot grow the server's memory (issue 15).
"""

from __future__ import annotations

import itertools
import json
import logging
import sys
from collections import deque
from collections.abc import AsyncGenerator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from http import HTTPStatus
from pathlib import Path
from typing import Any, Self, final

import anyio
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Request, Response

from tradeguard.io._coinbase import (
    heartbeat_message,
    subscriptions_message,
    ticker_message,
)
from tradeguard.io.exchange.auth import ApiCredentials, AuthError, verify_jwt
from tradeguard.io.exchange.market import Market
from tradeguard.io.exchange.tls import ServerTls

__all__ = ["ExchangeFeedServer", "Subscription"]


@final
@dataclass(frozen=True, slots=True)
class Subscription:
    """One subscribe request the server received, for assertions on resubscription."""

    connection: int
    channel: str
    product_ids: tuple[str, ...]


@dataclass(eq=False)
class _Subscriber:
    connection: ServerConnection
    number: int
    products: set[str] = field(default_factory=set)
    heartbeats: bool = False
    sequence: int = -1

    def next_sequence(self, skip: int) -> int:
        self.sequence += 1 + skip
        return self.sequence


class _RefusalsAtDebug(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The server's logger, with handshakes we refused on purpose logged at DEBUG.

    websockets 13 (the official SDK pins it) reports a handshake that `refuse_handshakes`
    answered with an HTTP status as "opening handshake failed" at ERROR, with a traceback;
    newer releases do not. A refusal is the fault control working, not a server error.
    """

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        # Every level goes through here, also from the adapter websockets wraps around us.
        if msg == "opening handshake failed" and isinstance(sys.exc_info()[1], InvalidStatus):
            level = logging.DEBUG
        super().log(level, msg, *args, **kwargs)


@final
class ExchangeFeedServer(anyio.AsyncContextManagerMixin):
    """A local market-data websocket server.

    Args:
        market: the prices to publish (shared with the REST half).
        host: where to listen; loopback only.
        port: 0 picks a free port; `port` tells which after start.
        tick_interval: seconds between ticker rounds.
        heartbeat_interval: seconds between heartbeats.
        tls: serve ``wss://``: True makes a throwaway CA the server owns (removed when the
            block exits); a `ServerTls` is used as given (its owner removes it).
        credentials: check the ``jwt`` a subscribe may carry against this key.
        subscription_history: subscribe records of closed connections kept for assertions.
    """

    def __init__(
        self,
        market: Market,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tick_interval: float = 0.05,
        heartbeat_interval: float = 0.05,
        tls: bool | ServerTls = False,
        credentials: ApiCredentials | None = None,
        subscription_history: int = 64,
    ) -> None:
        self.market = market
        self.host = host
        self.port = port
        self.tick_interval = tick_interval
        self.heartbeat_interval = heartbeat_interval
        self.silent = False
        self.refuse_status: int | None = None
        self._live_subscriptions: dict[int, list[Subscription]] = {}
        self._closed_subscriptions: deque[Subscription] = deque(maxlen=subscription_history)
        self.connections_accepted = 0
        self.handshakes_refused = 0
        self._skip_next = 0
        self._garbage_next = 0
        self._subscribers: set[_Subscriber] = set()
        self._numbers = itertools.count(1)
        self._server: Server | None = None
        self.credentials = credentials
        self._tls_wanted = tls is not False
        self._tls: ServerTls | None = tls if isinstance(tls, ServerTls) else None
        self._owns_tls = tls is True

    @property
    def url(self) -> str:
        """The ``ws://`` (or ``wss://``) address clients connect to."""
        return f"{'wss' if self._tls_wanted else 'ws'}://{self.host}:{self.port}"

    @property
    def ca_file(self) -> Path | None:
        """The PEM file of the CA that signed the server certificate (None without TLS)."""
        return None if self._tls is None else self._tls.ca_file

    @property
    def subscriptions(self) -> list[Subscription]:
        """Subscribe requests received: the last of closed connections, then open ones'."""
        live = [
            s
            for number in sorted(self._live_subscriptions)
            for s in self._live_subscriptions[number]
        ]
        return [*self._closed_subscriptions, *live]

    @property
    def subscriptions_kept(self) -> int:
        """Subscribe records the server holds (bounded under reconnect churn)."""
        live = sum(len(subs) for subs in self._live_subscriptions.values())
        return live + len(self._closed_subscriptions)

    @property
    def open_connections(self) -> int:
        """Connections currently open."""
        return len(self._subscribers)

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[Self]:
        async with anyio.create_task_group() as tg:
            await self.start()
            tg.start_soon(self._publish_forever)
            try:
                yield self
            finally:
                tg.cancel_scope.cancel("exchange feed server closed")
                with anyio.move_on_after(5, shield=True):
                    await self.stop()
                if self._owns_tls and self._tls is not None:
                    self._tls.close()
                    self._tls = None

    # ------------------------------------------------------------------ controls

    async def start(self) -> None:
        """Start listening (again, on the same port after a `stop`)."""
        if self._server is not None:
            return
        if self._tls_wanted and self._tls is None:
            self._tls = ServerTls()
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._process_request,
            ping_interval=None,
            close_timeout=1,
            ssl=None if self._tls is None else self._tls.server_context(),
            logger=_RefusalsAtDebug(logging.getLogger("tradeguard.io.exchange.feed_server")),
        )
        self.port = next(iter(self._server.sockets)).getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and close every connection (clients see 1001 going away)."""
        server, self._server = self._server, None
        if server is not None:
            server.close(close_connections=True)
            await server.wait_closed()

    async def drop_all(self, code: int = 1011, reason: str = "dropped by test control") -> None:
        """Close every open connection with ``code``; 1006 aborts without a close frame."""
        for sub in list(self._subscribers):
            if code == 1006:
                sub.connection.transport.abort()
            else:
                with anyio.move_on_after(1):
                    await sub.connection.close(code, reason)

    def refuse_handshakes(self, status: int | None) -> None:
        """Answer every new handshake with HTTP ``status`` (None: accept again)."""
        self.refuse_status = status

    def go_silent(self, silent: bool = True) -> None:
        """Stop (or resume) sending anything, heartbeats included, on open connections."""
        self.silent = silent

    def skip_sequence(self, count: int = 1) -> None:
        """Make the next message on every connection skip ``count`` sequence numbers."""
        self._skip_next += count

    def send_garbage(self, count: int = 1) -> None:
        """Send ``count`` messages that are not JSON before the next tickers."""
        self._garbage_next += count

    async def send_burst(self, count: int, *, rate: float | None = None) -> dict[str, Decimal]:
        """Send ``count`` one-ticker updates to every subscriber, for load tests and benchmarks.

        Symbols take turns (each connection's products, sorted), as the venue sends one ticker
        per message; message ``i`` prices its symbol at the market price plus ``i`` cents, so
        a receiver can tell the latest. Messages are encoded before the first is sent.

        Args:
            count: messages per subscriber.
            rate: messages a second per subscriber; None sends flat out.

        Returns:
            The last price sent per symbol (over all subscribers).
        """
        if count < 1 or (rate is not None and not rate > 0):
            raise ValueError(f"send_burst needs count >= 1 and rate > 0, got {count!r}, {rate!r}")
        last: dict[str, Decimal] = {}
        plans: list[tuple[_Subscriber, list[str]]] = []
        for sub in list(self._subscribers):
            symbols = sorted(sub.products)
            if not symbols:
                continue
            details = self._details(symbols)
            messages = []
            for i in range(count):
                symbol = symbols[i % len(symbols)]
                price = self.market.prices[symbol] + Decimal(i) / 100
                last[symbol] = price
                sequence = sub.next_sequence(0)
                messages.append(
                    ticker_message(sequence, {symbol: price}, details={symbol: details[symbol]})
                )
            plans.append((sub, messages))
        chunk = count if rate is None else max(1, int(rate / 1000))  # about one chunk a ms
        start = anyio.current_time()
        for begin in range(0, count, chunk):
            if rate is not None:
                await anyio.sleep_until(start + begin / rate)
            for sub, messages in plans:
                try:
                    for message in messages[begin : begin + chunk]:
                        await sub.connection.send(message)
                except ConnectionClosed:
                    self._subscribers.discard(sub)
        return last

    # ------------------------------------------------------------------ internals

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.refuse_status is None:
            return None
        self.handshakes_refused += 1
        status = HTTPStatus(self.refuse_status)
        return connection.respond(status, f"{status.phrase} (refused by test control)\n")

    async def _handle(self, connection: ServerConnection) -> None:
        sub = _Subscriber(connection, next(self._numbers))
        self.connections_accepted += 1
        self._subscribers.add(sub)
        self._live_subscriptions[sub.number] = []
        try:
            async for raw in connection:
                await self._on_request(sub, raw)
        except ConnectionClosed:
            pass
        finally:
            self._subscribers.discard(sub)
            # The connection is gone: only a bounded history of its requests is kept.
            self._closed_subscriptions.extend(self._live_subscriptions.pop(sub.number, ()))

    async def _on_request(self, sub: _Subscriber, raw: str | bytes) -> None:
        try:
            body = json.loads(raw)
            channel = body["channel"]
            products = [str(p) for p in body.get("product_ids", [])]
        except (ValueError, KeyError, TypeError):
            return  # a real venue answers with an error message; clients here never do this
        kind = body.get("type")
        if kind not in ("subscribe", "unsubscribe"):
            return
        token = body.get("jwt")
        if self.credentials is not None and token is not None:
            try:
                verify_jwt(self.credentials, str(token), method=None, path=None)
            except AuthError as err:
                await sub.connection.send(json.dumps({"type": "error", "message": str(err)}))
                return
        added: list[str] = []
        if kind == "subscribe":
            record = Subscription(sub.number, channel, tuple(products))
            self._live_subscriptions.setdefault(sub.number, []).append(record)
            if channel == "heartbeats":
                sub.heartbeats = True
            elif channel == "ticker":
                added = [p for p in products if p in self.market.prices and p not in sub.products]
        elif channel == "heartbeats":
            sub.heartbeats = False
        elif channel == "ticker":
            sub.products.difference_update(products)
        tickers = sorted(sub.products.union(added))
        acked = {"ticker": tickers, "heartbeats": ["heartbeats"] * sub.heartbeats}
        await sub.connection.send(subscriptions_message(sub.next_sequence(0), acked))
        snapshot = {p: self.market.prices[p] for p in added if p not in self.market.frozen}
        if snapshot:
            message = ticker_message(
                sub.next_sequence(0), snapshot, snapshot=True, details=self._details(snapshot)
            )
            await sub.connection.send(message)
        # Only now may updates flow for the new products: the snapshot comes first.
        sub.products.update(added)

    def _details(self, symbols: Iterable[str]) -> dict[str, dict[str, str]]:
        details = {}
        for symbol in symbols:
            bid, ask = self.market.bid_ask(symbol)
            low, high = str(self.market.low[symbol]), str(self.market.high[symbol])
            details[symbol] = {
                "volume_24_h": str(self.market.volume[symbol]),
                "low_24_h": low,
                "high_24_h": high,
                "low_52_w": low,
                "high_52_w": high,
                "price_percent_chg_24_h": str(self.market.change_percent(symbol)),
                "best_bid": str(bid),
                "best_bid_quantity": "1",
                "best_ask": str(ask),
                "best_ask_quantity": "1",
            }
        return details

    async def _publish_forever(self) -> None:
        beats = itertools.count(1)
        next_beat = anyio.current_time()
        while True:
            await anyio.sleep(self.tick_interval)
            moved = self.market.step()
            beat = anyio.current_time() >= next_beat
            if beat:
                next_beat = anyio.current_time() + self.heartbeat_interval
            if self.silent:
                continue
            skip, self._skip_next = self._skip_next, 0
            garbage, self._garbage_next = self._garbage_next, 0
            counter = next(beats) if beat else 0
            for sub in list(self._subscribers):
                await self._publish(sub, moved, beat, counter, skip, garbage)

    async def _publish(
        self,
        sub: _Subscriber,
        moved: dict[str, Decimal],
        beat: bool,
        counter: int,
        skip: int,
        garbage: int,
    ) -> None:
        messages = ["}{ not json"] * garbage
        prices = {s: p for s, p in self.market.prices.items() if s in sub.products and s in moved}
        if prices:
            details = self._details(prices)
            messages.append(ticker_message(sub.next_sequence(skip), prices, details=details))
            skip = 0
        if sub.heartbeats and beat:
            messages.append(heartbeat_message(sub.next_sequence(skip), counter))
        try:
            for message in messages:
                await sub.connection.send(message)
        except ConnectionClosed:
            self._subscribers.discard(sub)
