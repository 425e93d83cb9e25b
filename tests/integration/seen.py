"""`Seen`: a runtime as a broker or the hook sees it, keeping what was reported to it."""

from __future__ import annotations

from dataclasses import dataclass, field

from tradeguard import ReliabilityLayer
from tradeguard.fsm.effects import Alert, Effect
from tradeguard.fsm.events import ApiCall, Observation, RateLimitUsage
from tradeguard.io import Runtime


@dataclass
class Seen:
    """Keeps every observation and alert, then applies it to the runtime."""

    runtime: Runtime
    observed: list[Observation] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)

    @property
    def layer(self) -> ReliabilityLayer:
        return self.runtime.layer

    def observe(self, observation: Observation) -> list[Effect]:
        self.observed.append(observation)
        return self.runtime.observe(observation)

    def alert(self, alert: Alert) -> None:
        self.alerts.append(alert)
        self.runtime.alert(alert)

    def calls(self) -> list[ApiCall]:
        return [o for o in self.observed if isinstance(o, ApiCall)]

    def usages(self) -> list[float]:
        return [o.usage for o in self.observed if isinstance(o, RateLimitUsage)]

    def forget(self) -> None:
        self.observed.clear()
