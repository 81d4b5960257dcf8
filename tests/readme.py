"""The README read as a newcomer reads it: the commands in its code blocks and the figures
in its tables, for the tests that run the one and reproduce the other."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
SHELL_FENCES = ("sh", "shell", "bash", "console")


@dataclass(frozen=True)
class Command:
    line: int  # where it starts in the README, 1-based
    text: str  # continuation lines joined, a trailing "# comment" removed


def _strip_comment(text: str) -> str:
    """``cmd args   # why`` -> ``cmd args``: a '#' after a blank, outside quotes."""
    quote = ""
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1].isspace()):
            return text[:i].rstrip()
    return text.rstrip()


def code_blocks(text: str | None = None) -> list[tuple[int, str, list[str]]]:
    """(first line, fence language or "indented", lines) of every code block."""
    lines = (text if text is not None else README.read_text()).splitlines()
    blocks: list[tuple[int, str, list[str]]] = []
    fence: str | None = None
    current: list[str] = []
    start = 0
    previous_blank = True
    for number, line in enumerate(lines, 1):
        if fence is not None:
            if line.startswith("```"):
                blocks.append((start, fence, current))
                fence, current = None, []
            else:
                current.append(line)
            continue
        if line.startswith("```"):
            fence, start, current = line[3:].strip(), number + 1, []
            continue
        indented = line.startswith("    ") and line.strip() != ""
        if indented and (previous_blank or current):
            if not current:
                start = number
            current.append(line)
        elif current and line.strip():
            blocks.append((start, "indented", current))
            current = []
        previous_blank = not line.strip()
    if current:
        blocks.append((start, "indented", current))
    return blocks


def commands(text: str | None = None) -> list[Command]:
    """Every shell command shown: indented blocks and sh/shell/bash fences."""
    found: list[Command] = []
    for start, kind, lines in code_blocks(text):
        if kind != "indented" and kind not in SHELL_FENCES:
            continue
        pending, first = "", 0
        for offset, raw in enumerate(lines):
            line = raw.strip()
            if not pending:
                first = start + offset
            if line.endswith("\\"):
                pending += line[:-1].rstrip() + " "
                continue
            joined = _strip_comment(pending + line)
            pending = ""
            if joined:
                found.append(Command(line=first, text=joined))
    return found


def table(header: list[str], text: str | None = None) -> list[dict[str, str]]:
    """The rows of the README table whose header row is ``header``, cells by column name."""
    lines = (text if text is not None else README.read_text()).splitlines()
    # Blanks collapsed: a header with an empty first cell is written "| | a |".
    wanted = " ".join(("| " + " | ".join(header) + " |").split())
    # ValueError: the table is gone or its columns changed.
    at = [" ".join(line.split()) for line in lines].index(wanted)
    rows = []
    for line in lines[at + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


def number(cell: str) -> float:
    """'475 200' -> 475200.0, '15.2 s' -> 15.2, '80.9 MB' -> 80.9 (thin spaces group digits)."""
    match = re.fullmatch(r"([\d  ,]*\d(?:\.\d+)?)\s*[A-Za-z]*", cell.strip())
    if match is None:
        raise ValueError(f"not a figure: {cell!r}")
    return float(re.sub(r"[  ,]", "", match.group(1)))
