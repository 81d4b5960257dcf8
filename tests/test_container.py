"""The Dockerfile's essentials, checked without a Docker engine (none runs here).

Multi-stage on a slim Python base, runtime dependencies only, a non-root USER, a
HEALTHCHECK that hits /healthz (through `gearshift health`), ENTRYPOINT `gearshift run`,
and no secrets baked in: no ENV/ARG carrying a password, token or secret, no COPY of
secret-looking files, and a .dockerignore that keeps them (and .venv, .git) out of the
build context. `gearshift health` itself is tested against a live daemon in
test_operator_cli.py.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib

from conftest import ROOT

SECRET_WORDS = re.compile(r"PASSWORD|PASSWD|TOKEN|SECRET|CREDENTIAL|DSN|API_?KEY", re.I)


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    logical, current = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        current += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            if current.strip():
                logical.append(current.strip())
            current = ""
    result = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            found.append([])
        if found:
            found[-1].append((keyword, rest))
    return found


def env_pairs(rest: str) -> list[tuple[str, str]]:
    words = shlex.split(rest)
    if len(words) >= 2 and "=" not in words[0]:
        return [(words[0], " ".join(words[1:]))]  # legacy `ENV KEY value`
    return [tuple(word.split("=", 1)) if "=" in word else (word, "") for word in words]


def test_multi_stage_slim_base() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2
    args = dict(env_pairs(rest)[0] for keyword, rest in instructions()
                if keyword == "ARG" and "=" in rest and not rest.startswith("EXTRAS"))
    for stage in all_stages:
        image = stage[0][1].split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), image)
        assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", image), image
    assert all_stages[0][0][1].endswith("AS build")


def test_runtime_stage_runs_gearshift_as_non_root_with_a_healthcheck() -> None:
    final = stages()[-1]
    keywords = [k for k, _ in final]
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users, "the runtime stage must switch to a non-root USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    # USER comes before the process starts.
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    healthcheck = next(rest for keyword, rest in final if keyword == "HEALTHCHECK")
    command = json.loads(healthcheck.split("CMD", 1)[1])
    assert command[:2] == ["gearshift", "health"]
    env = dict(pair for keyword, rest in final if keyword == "ENV" for pair in env_pairs(rest))
    assert env["GEARSHIFT_URL"].startswith("http://127.0.0.1:")  # health's default target
    entrypoint = json.loads(next(rest for keyword, rest in final if keyword == "ENTRYPOINT"))
    assert entrypoint == ["gearshift", "run"]
    # Only the built environment is copied in: no sources, no build tools.
    copies = [rest for keyword, rest in final if keyword in ("COPY", "ADD")]
    assert copies == ["--from=build /opt/gearshift /opt/gearshift"]
    installs = " ".join(rest for keyword, rest in final if keyword == "RUN")
    for build_tool in ("gcc", "-dev", "pip install"):
        assert build_tool not in installs


def test_only_runtime_extras_are_installed() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = set(pyproject["project"]["optional-dependencies"])
    default = next(rest for keyword, rest in instructions()
                   if keyword == "ARG" and rest.startswith("EXTRAS="))
    chosen = set(default.split("=", 1)[1].split(","))
    assert chosen <= extras, chosen - extras
    assert not chosen & {"dev", "demo", "sim", "all"}
    pip = [rest for keyword, rest in stages()[0] if keyword == "RUN" and "pip install" in rest]
    assert any('".[${EXTRAS}]"' in rest for rest in pip)


def test_no_secrets_baked_in() -> None:
    for keyword, rest in instructions():
        if keyword in ("ENV", "ARG", "LABEL"):
            for name, value in env_pairs(rest):
                assert not (SECRET_WORDS.search(name) and value), f"{keyword} {name}={value}"
                assert not SECRET_WORDS.search(value), f"{keyword} {name}={value}"
        if keyword in ("COPY", "ADD"):
            sources = [w for w in shlex.split(rest) if not w.startswith("--")][:-1]
            for source in sources:
                for pattern in ("*.pw", "*token*", "*secret*", "*.pem", "*.key", ".env"):
                    assert not fnmatch.fnmatch(source.lower(), pattern), source
            assert not any(s in (".", "./") for s in sources), "COPY . copies everything"


def test_dockerignore_keeps_local_state_and_secrets_out() -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for needed in (".git", ".venv", "tests", "**/*.pw", "**/*token*", "**/*secret*"):
        assert needed in patterns, needed
    # What the build stage copies is not excluded.
    for kept in ("pyproject.toml", "README.md", "daemon"):
        assert not any(fnmatch.fnmatch(kept, p) for p in patterns), kept
