"""The embedded simulated exchange: runs on 127.0.0.1 for tests, the demo and preflight."""

from tradeguard.io.exchange.admin import AdminServer
from tradeguard.io.exchange.auth import ApiCredentials, AuthError
from tradeguard.io.exchange.deterministic import DeterministicBroker
from tradeguard.io.exchange.feed_server import ExchangeFeedServer, Subscription
from tradeguard.io.exchange.market import Market
from tradeguard.io.exchange.rest_server import ExchangeRestServer
from tradeguard.io.exchange.tls import ServerTls
from tradeguard.io.exchange.venue import BOT_PREFIX, Fill, ForeignOrder, Venue, VenueFaults

__all__ = [
    "BOT_PREFIX",
    "AdminServer",
    "ApiCredentials",
    "AuthError",
    "DeterministicBroker",
    "ExchangeFeedServer",
    "ExchangeRestServer",
    "Fill",
    "ForeignOrder",
    "Market",
    "ServerTls",
    "Subscription",
    "Venue",
    "VenueFaults",
]
