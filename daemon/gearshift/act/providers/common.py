"""What every real provider shares: strict settings, credentials, threads, and the quota cap.

* ``parse_settings`` validates a provider's ``settings:`` block with the kind's own pydantic
  model (``extra="forbid"``, in ``kind_settings``), so a misspelt key fails at start-up with
  a message that names the provider and the key, never at the first scale-out;
* ``SecretRef`` reads a credential from an environment variable or a file, checks at
  start-up that it is there, and reads it again whenever a provider (re)connects, so a
  rotated password file needs no restart; the value only ever lives in a ``SecretStr``;
* ``redact`` scrubs known secret values out of any text that came back from a server
  before it goes into an error message or a log line;
* ``Blocking`` runs blocking SDK calls (pyvmomi, the oVirt SDK) on the provider's own
  small thread pool, bounded by a timeout, so a hung vCenter stalls neither the event loop
  nor the threads every other ``asyncio.to_thread`` user shares;
* ``Slots`` enforces the providers file's ``quota.max_nodes`` inside the provider too, so
  even a caller that ignores the planner (a restart, a bench, a bug) cannot overfill it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from gearshift.durations import Duration
from gearshift.errors import ConfigError, QuotaExceeded, TransientError
from gearshift.model import Machine
from gearshift.policy.schema import ProviderSpec

T = TypeVar("T")
S = TypeVar("S", bound="ProviderSettings")


# Provider settings take durations as policy files and settings do: one type, one parser.
Seconds = Duration


class ProviderSettings(BaseModel):
    """Base of every kind's ``settings:`` model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_settings(spec: ProviderSpec, model: type[S]) -> S:
    """``spec.settings`` validated by ``model``, or a ConfigError naming the provider."""
    try:
        return model.model_validate(spec.settings)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            field = f"settings.{where}" if where else "settings"
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"provider {spec.name} (kind {spec.kind}): {field}: {message}")
        raise ConfigError(problems) from None


class SecretRef:
    """A credential named in the providers file: an environment variable or a file."""

    def __init__(self, *, provider: str, what: str, env: str | None = None,
                 file: Path | None = None) -> None:
        if (env is None) == (file is None):
            raise ConfigError([f"provider {provider}: give the {what} as exactly one of "
                               f"{what}_env or {what}_file"])
        self.provider = provider
        self.what = what
        self.env = env
        self.file = file

    @property
    def source(self) -> str:
        """Where the value comes from (safe to show: a name, never the value)."""
        return f"environment variable {self.env}" if self.env else f"file {self.file}"

    def get(self) -> SecretStr:
        """Read the value now; ConfigError when it is missing or empty."""
        if self.env is not None:
            value = os.environ.get(self.env, "")
        else:
            assert self.file is not None
            try:
                value = self.file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError([f"provider {self.provider}: cannot read the {self.what} "
                                   f"from {self.source}: {exc.strerror}"]) from None
        if not value:
            raise ConfigError([f"provider {self.provider}: the {self.what} from {self.source} "
                               f"is empty or unset"])
        return SecretStr(value)

    def check(self) -> None:
        """Fail at start-up rather than at the first scale-out."""
        self.get()

    def __repr__(self) -> str:
        return f"SecretRef({self.what} from {self.source})"


def plain_or_secret(*, provider: str, what: str, value: str | None, env: str | None,
                    file: Path | None = None) -> str | SecretRef | None:
    """A value that may be written inline (a user name) or come from env or a file."""
    given = [v for v in (value, env, file) if v is not None]
    if len(given) > 1:
        raise ConfigError([f"provider {provider}: give the {what} once: as {what}, "
                           f"{what}_env or {what}_file"])
    if value is not None:
        return value
    if env is None and file is None:
        return None
    return SecretRef(provider=provider, what=what, env=env, file=file)


def reveal(value: str | SecretRef | None) -> str | None:
    if isinstance(value, SecretRef):
        return value.get().get_secret_value()
    return value


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every secret value in it replaced by ``**********``."""
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, "**********")
    return text


class Blocking:
    """Runs blocking SDK calls on the provider's own threads, each bounded by a timeout.

    A call that outlives its timeout raises ``TransientError`` at once; its thread carries on
    until the SDK's own socket timeout ends it, which is why every SDK is also configured
    with one. The pool is small and per provider: a hung endpoint can only use up its own.
    """

    def __init__(self, provider: str, *, workers: int, timeout: float) -> None:
        self.provider = provider
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=workers,
                                        thread_name_prefix=f"gearshift-{provider}")

    async def __call__(self, fn: Callable[[], T], *, what: str,
                       timeout: float | None = None) -> T:
        limit = self.timeout if timeout is None else timeout
        future = asyncio.get_running_loop().run_in_executor(self._pool, fn)
        try:
            async with asyncio.timeout(limit):
                return await future
        except TimeoutError as exc:
            raise TransientError(self.provider, f"{what} did not finish within {limit:g}s") from exc

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class Slots:
    """The provider's node quota, counted from what it owns plus creates in flight."""

    def __init__(self, provider: str, *, max_nodes: int) -> None:
        self.provider = provider
        self.max_nodes = max_nodes
        self.used: int | None = None  # unknown until the first list
        self.pending = 0
        self._lock = asyncio.Lock()

    def counted(self, machines: list[Machine]) -> list[Machine]:
        """Take a fresh count from a full listing (only when no create is in flight)."""
        if self.pending == 0:
            self.used = len(machines)
        return machines

    @asynccontextmanager
    async def claim(self, list_owned: Callable[[], Awaitable[list[Machine]]]
                    ) -> AsyncIterator[None]:
        """Hold one slot for a create; QuotaExceeded when none is free."""
        async with self._lock:
            if self.used is None:
                self.used = len(await list_owned())
            if self.used + self.pending >= self.max_nodes:
                raise QuotaExceeded(self.provider, f"quota of {self.max_nodes} nodes is used up "
                                                   f"({self.used} made, {self.pending} being made)")
            self.pending += 1
        made = False
        try:
            yield
            made = True
        finally:
            self.pending -= 1
            if made and self.used is not None:
                self.used += 1

    def released(self) -> None:
        """One machine is gone."""
        if self.used:
            self.used -= 1
