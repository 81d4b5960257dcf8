"""The errors gearshift raises, as one small typed hierarchy.

Callers decide what to do by class, never by parsing messages::

    GearshiftError
    ├── ConfigError              bad settings, policy or providers file (refused, nothing changes)
    ├── BadMessage               a fact or request message we cannot trust (counted, dropped)
    ├── ProviderError            a provider call failed; .provider names it
    │   ├── TransientError       retry later (timeouts, throttling, 5xx)
    │   │   └── CircuitOpen      refused without a call: the provider's breaker is open
    │   ├── QuotaExceeded        the provider's quota is full: spill to the next placement
    │   ├── CapacityUnavailable  the provider has no capacity now: spill and back off
    │   ├── PermanentError       bad config or credentials: stop using it until fixed
    │   └── NotFound             the machine is not there (destroy treats it as done)
    ├── PlatformError            a PaaS command (deactivate, move, remove) failed
    │   └── MoveFailed           some gears could not be moved off a draining node
    ├── DaemonError              the CLI could not get an answer from a running daemon
    │   ├── DaemonUnreachable    nothing answers at the URL (exit 3)
    │   └── ApiError             the daemon said no; .status is the HTTP status
    ├── SignalQueryFailed        a Prometheus signal query gave no usable value (.outcome)
    ├── FactsUnavailable         the agent could not read its node's facts this time
    ├── CommandRefused           the agent will not run a requested command (not allowed,
    │                            bad arguments, malformed request)
    └── JournalError             the journal cannot be read or written as asked
        ├── JournalSchemaError   the store's schema is newer than this gearshift (refuse to start)
        ├── BadTransition        an operation asked to move backwards (a bug; nothing written)
        └── Fenced               our leader lease moved on: this write is refused, step down

Messages never carry secrets: provider code builds them from names and ids only.
"""

from __future__ import annotations


class GearshiftError(Exception):
    """Base of every error gearshift raises on purpose."""


class ConfigError(GearshiftError):
    """A configuration, policy or providers file is invalid.

    ``problems`` holds one ``FILE:LINE:COL: message`` line per problem.
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class BadMessage(GearshiftError):
    """A message from the outside world was rejected; ``reason`` is a metric label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class ProviderError(GearshiftError):
    """A provider call failed. Subclasses say what kind of failure it was."""

    kind = "provider"

    def __init__(self, provider: str, message: str) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.message = message


class TransientError(ProviderError):
    """Worth retrying: timeouts, throttling, server errors."""

    kind = "transient"


class CircuitOpen(TransientError):
    """The guard refused the call without making it: the provider's circuit breaker is open.

    Transient for callers (try again later), but never retried inside the guard.
    """

    kind = "circuit_open"


class QuotaExceeded(ProviderError):
    """The provider's quota is used up; the next placement should take the rest."""

    kind = "quota"


class CapacityUnavailable(ProviderError):
    """The provider has no capacity right now (for example InsufficientInstanceCapacity)."""

    kind = "capacity"


class PermanentError(ProviderError):
    """Bad configuration or credentials: retrying will not help."""

    kind = "permanent"


class NotFound(ProviderError):
    """The machine does not exist (any more)."""

    kind = "not_found"


class PlatformError(GearshiftError):
    """A PaaS-side command failed (deactivate, move, remove from district)."""


class MoveFailed(PlatformError):
    """Some gears could not be moved off a draining node."""


class JournalError(GearshiftError):
    """The journal could not do what was asked (store unreachable, bad state)."""


class JournalSchemaError(JournalError):
    """The journal's schema is newer than this version of gearshift understands."""


class BadTransition(JournalError):
    """An operation was asked to move to a phase it cannot reach from where it is."""


class Fenced(JournalError):
    """A write carried a fencing token that is no longer the leader's: refused.

    Raised when another instance has taken the leader lease; the instance that gets it
    must stop acting at once (it is a deposed leader).
    """


class DaemonError(GearshiftError):
    """The CLI asked a running daemon (``--url``) and did not get what it asked for."""


class DaemonUnreachable(DaemonError):
    """Nothing answers at the daemon's URL (not running, wrong --url, firewalled)."""


class ApiError(DaemonError):
    """The daemon answered with an error status; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class SignalQueryFailed(GearshiftError):
    """A Prometheus signal query gave no usable value; ``outcome`` is a metric label
    (``error``, ``timeout``, ``unreachable``, ``no_data``, ``not_finite``)."""

    def __init__(self, outcome: str, detail: str) -> None:
        super().__init__(f"{outcome}: {detail}")
        self.outcome = outcome
        self.detail = detail


class FactsUnavailable(GearshiftError):
    """The agent could not read its node's facts this time (it publishes nothing new)."""


class CommandRefused(GearshiftError):
    """The agent refuses a command request; the message goes into the reply's ``error``."""

    def __init__(self, message: str, *, request_id: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id
