"""Run allowlisted commands for gearshift, safely: no shell, whole arguments, a timeout.

``CommandRunner.handle(payload)`` turns one request (see the package docstring for the
protocol) into one reply dict. Nothing in a request can choose the program or add an
argv element: the template fixes both, and an argument fills exactly the element its
placeholder sits in, after passing a strict character check.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import signal
import string
from collections import OrderedDict
from typing import Any

import structlog

from gearshift import jsonlimits
from gearshift.agent.config import template_fields
from gearshift.errors import CommandRefused
from gearshift.wire.commands import CommandReply

log = structlog.get_logger(component="gearshift.agent.commands")

MAX_OUTPUT = 64 * 1024
MAX_REQUEST = 16 * 1024
# Long enough for a list of gear UUIDs (oo-admin-move --gear_uuid a,b,c,...).
ARGUMENT = re.compile(r"[A-Za-z0-9._:@%+=,][A-Za-z0-9._:@%+=,-]{0,4095}")
REQUEST_ID = re.compile(r"\A[A-Za-z0-9._:-]{1,128}\Z")


def reply(*, request_id: str | None, command: str, ok: bool = False,
          exit_code: int | None = None, stdout: str = "", stderr: str = "",
          error: str | None = None) -> dict[str, Any]:
    """The reply as the JSON object sent back (``wire.commands.CommandReply``)."""
    return CommandReply(request_id=request_id, command=command, ok=ok, exit_code=exit_code,
                        stdout=stdout, stderr=stderr, error=error).to_dict()


def build_argv(template: str, args: dict[str, str]) -> list[str]:
    """The argv for ``template`` with ``args`` substituted (each into its own element)."""
    fields = template_fields(template)
    wanted = {name for names in fields for name in names}
    missing = sorted(wanted - set(args))
    if missing:
        raise CommandRefused(f"missing argument(s): {', '.join(missing)}")
    extra = sorted(set(args) - wanted)
    if extra:
        raise CommandRefused(f"unexpected argument(s): {', '.join(extra)}")
    argv = []
    for token in shlex.split(template):
        parts = []
        for literal, name, _, _ in string.Formatter().parse(token):
            parts.append(literal)
            if name is not None:
                parts.append(args[name])
        argv.append("".join(parts))
    return argv


def _check_args(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise CommandRefused("args must be an object of strings")
    args = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise CommandRefused(f"bad argument name {str(key)[:40]!r}")
        if not isinstance(value, str) or not ARGUMENT.fullmatch(value):
            raise CommandRefused(f"argument {key} is not allowed: use 1-4096 characters from "
                          f"[A-Za-z0-9._:@%+=,-], not starting with '-'")
        args[key] = value
    return args


def _child_env() -> dict[str, str]:
    """The agent's environment without its own settings (which may hold secrets)."""
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("GEARSHIFT_")}


async def _drain(stream: asyncio.StreamReader | None, limit: int) -> tuple[bytes, bool]:
    """Read ``stream`` to the end, keeping the first ``limit`` bytes."""
    if stream is None:
        return b"", False
    kept = bytearray()
    cut = False
    while chunk := await stream.read(65536):
        room = limit - len(kept)
        if room > 0:
            kept += chunk[:room]
        cut = cut or len(chunk) > room
    return bytes(kept), cut


def _text(data: bytes, cut: bool) -> str:
    text = data.decode("utf-8", errors="replace")
    return text + "\n[output truncated at 64 KiB]" if cut else text


class CommandRunner:
    def __init__(self, commands: dict[str, str], *, timeout: float,
                 max_concurrent: int = 1, remember: int = 256) -> None:
        self.commands = dict(commands)
        self.timeout = timeout
        self._limit = asyncio.Semaphore(max_concurrent)
        self._seen: OrderedDict[str, dict[str, Any] | None] = OrderedDict()
        self._remember = remember
        self.runs = 0

    @staticmethod
    def parse(payload: bytes) -> tuple[str | None, str, Any]:
        """(request_id, command, raw args); ``CommandRefused`` when the request is malformed.

        A request_id that is not a short token is treated as absent.
        """
        if len(payload) > MAX_REQUEST:
            raise CommandRefused(f"bad request: larger than {MAX_REQUEST} bytes")
        try:
            data = jsonlimits.loads(payload)
        except (ValueError, RecursionError) as exc:
            raise CommandRefused("bad request: not JSON") from exc
        if not isinstance(data, dict):
            raise CommandRefused("bad request: not a JSON object")
        request_id = data.get("request_id")
        if not isinstance(request_id, str) or not REQUEST_ID.match(request_id):
            request_id = None
        command = data.get("command")
        if not isinstance(command, str) or not command:
            raise CommandRefused("bad request: command must be a string", request_id=request_id)
        return request_id, command[:64], data.get("args")

    def _refuse(self, request_id: str | None, command: str, error: str) -> dict[str, Any]:
        log.warning("command request refused", request_id=request_id, command=command,
                    error=error)
        return reply(request_id=request_id, command=command, error=error)

    async def handle(self, payload: bytes) -> dict[str, Any] | None:
        """The reply to one request, or None for a duplicate still running."""
        try:
            request_id, command, raw_args = self.parse(payload)
        except CommandRefused as exc:
            return self._refuse(exc.request_id, "", str(exc))
        template = self.commands.get(command)
        if template is None:
            log.warning("command not allowed: refused", request_id=request_id,
                        command=command, allowed=sorted(self.commands))
            return reply(request_id=request_id, command=command, error="not allowed")
        if request_id is not None and request_id in self._seen:
            earlier = self._seen[request_id]
            log.info("duplicate command request: not running it again",
                     request_id=request_id, command=command, answered=earlier is not None)
            return earlier
        try:
            argv = build_argv(template, _check_args(raw_args))
        except CommandRefused as exc:
            return self._refuse(request_id, command, str(exc))
        if request_id is not None:
            self._seen[request_id] = None
            while len(self._seen) > self._remember:
                self._seen.popitem(last=False)
        result = await self._run(argv, request_id=request_id, command=command)
        if request_id is not None and request_id in self._seen:
            self._seen[request_id] = result
        return result

    async def _run(self, argv: list[str], *, request_id: str | None,
                   command: str) -> dict[str, Any]:
        async with self._limit:
            self.runs += 1
            log.info("running command", request_id=request_id, command=command, argv=argv)
            try:
                process = await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE, env=_child_env(), start_new_session=True)
            except OSError as exc:
                log.warning("command could not start", request_id=request_id, command=command,
                            error=exc.strerror)
                return reply(request_id=request_id, command=command,
                             error=f"cannot run {argv[0]}: {exc.strerror}")
            reading = asyncio.gather(_drain(process.stdout, MAX_OUTPUT),
                                     _drain(process.stderr, MAX_OUTPUT))
            timed_out = False
            try:
                async with asyncio.timeout(self.timeout):
                    (out, out_cut), (err, err_cut) = await asyncio.shield(reading)
                    await process.wait()
            except TimeoutError:
                timed_out = True
                # The whole process group: children of a shell script go too.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
                (out, out_cut), (err, err_cut) = await reading
            if timed_out:
                log.warning("command timed out and was killed", request_id=request_id,
                            command=command, timeout=self.timeout)
                return reply(request_id=request_id, command=command,
                             stdout=_text(out, out_cut), stderr=_text(err, err_cut),
                             error=f"timed out after {self.timeout:g}s")
            code = process.returncode
            log.info("command finished", request_id=request_id, command=command,
                     exit_code=code)
            return reply(request_id=request_id, command=command, ok=code == 0, exit_code=code,
                         stdout=_text(out, out_cut), stderr=_text(err, err_cut),
                         error=None if code == 0 else f"exited with {code}")
