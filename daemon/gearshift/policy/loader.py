"""Load policy and provider files, and say exactly where each problem is.

Every problem is one line, ``FILE:LINE:COL: message``, pointing at the key or value an
SRE has to change (unknown keys at the key, bad values at the value, missing keys at
the block that lacks them). A set of files loads completely or not at all: callers keep
their last good ``PolicySet`` when this raises ``ConfigError``.

YAML is composed with PyYAML into nodes first (``policy.documents``), so every value keeps its position, then
validated by the pydantic models in ``policy.schema``; the files relate to each other
(placements name providers and blueprints) and those checks run last, on the whole set.

Each provider kind's own ``settings:`` (and its blueprints') are checked too when the
caller passes the kinds' models as ``KindSettings``: act/ defines them and policy/ sits
below act/, so ``gearshift validate`` hands them in rather than this module importing them.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from pydantic import BaseModel, ValidationError

from gearshift import safeyaml
from gearshift.errors import ConfigError
from gearshift.policy.documents import Document, Path_, read_documents
from gearshift.policy.schema import PolicySet, PoolPolicy, ProvidersFile
from gearshift.redact import redact

_KINDS: dict[str, type[BaseModel]] = {"Pool": PoolPolicy, "Providers": ProvidersFile}
_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class KindSettings:
    """Each provider kind's model for ``settings:``, of its providers and of its blueprints.

    A kind missing from a mapping takes any settings there.
    """

    providers: Mapping[str, type[BaseModel]] = field(default_factory=dict)
    blueprints: Mapping[str, type[BaseModel]] = field(default_factory=dict)


def _model_at(model: type[BaseModel], path: Path_) -> type[BaseModel] | None:
    """The model class that validates the mapping at ``path`` (to list its allowed keys)."""
    current: Any = model
    for part in path:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        found = next((f for name, f in current.model_fields.items()
                      if part in (name, f.alias)), None)
        if found is None:
            return None
        current = _unwrap(found.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """list[X] -> X, X | None -> X, so nested models can be found."""
    while True:
        origin = typing.get_origin(annotation)
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        container = origin in (list, tuple, set, frozenset) and args
        optional = origin in (Union, types.UnionType) and len(args) == 1
        if container or optional or origin is typing.Annotated:
            annotation = args[0]
        else:
            return annotation


def _error_path(loc: Sequence[str | int], doc: Document) -> Path_:
    """Map pydantic's ``loc`` onto the document's paths, dropping pydantic's own tags."""
    path: Path_ = ()
    for part in loc:
        candidate = (*path, part)
        if candidate in doc.values or candidate in doc.keys:
            path = candidate
        elif isinstance(part, str) and part.isdigit() and (*path, int(part)) in doc.values:
            path = (*path, int(part))
    return path


def _dotted(path: Path_) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "document"


def _validation_problems(exc: ValidationError, doc: Document, model: type[BaseModel],
                         *, at: Path_ = (), label: str = "") -> list[str]:
    """One line per error of ``model``, which validated the mapping at ``at`` in ``doc``.

    With ``at`` set (a provider's ``settings``), the key path shown starts at ``at``'s last
    key and each message is led by ``label`` (which provider or blueprint it is).
    """
    problems = []
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        path = _error_path((*at, *loc), doc)
        inside = path[:len(at)] == at  # False when the block itself is absent from the file
        inner = path[len(at):] if inside else ()  # the path within model's mapping
        # shown from the block's own key on (settings.machines[0].bmc), or the whole path
        shown = path[max(len(at) - 1, 0):] if inside else at[-1:]
        kind = error["type"]
        lead = f"{label}: " if label else ""
        if kind == "extra_forbidden":
            parent = _model_at(model, inner[:-1])
            allowed = ""
            if parent is not None:
                names = sorted(f.alias or n for n, f in parent.model_fields.items())
                allowed = f" (allowed here: {', '.join(names)})"
            where = f"{_dotted(shown)}: " if label else ""
            problems.append(doc.problem(path, f"{lead}{where}unknown key {path[-1]!r}{allowed}",
                                        key=True))
        elif kind == "missing":
            missing = f"missing required key {loc[-1]!r}"
            problems.append(doc.problem(path, f"{lead}{_dotted(shown)}: {missing}"
                                        if shown else missing))
        else:
            name = loc[-1] if loc else None
            parent = _model_at(model, inner) if tuple(loc[:-1]) == inner else None
            if isinstance(name, str) and parent is not None and name in parent.model_fields:
                shown = (*shown, name)  # a key left out whose default is refused
            message = error["msg"].removeprefix("Value error, ")
            problems.append(doc.problem(path, f"{lead}{_dotted(shown)}: {message}"))
    return problems


def _files_in(paths: Iterable[Path], problems: list[str]) -> list[Path]:
    """The YAML files named or contained in ``paths``, each once."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(
                p for p in path.iterdir()
                if p.is_file() and p.suffix in _SUFFIXES and not p.name.startswith((".", "#"))
            ))
        elif path.exists():
            files.append(path)
        else:
            problems.append(f"{path}:1:1: no such file or directory")
    unique: dict[Path, Path] = {}
    for file in files:
        unique.setdefault(file.resolve(), file)
    return list(unique.values())


def _cross_check(pools: list[tuple[PoolPolicy, Document]],
                 providers: tuple[ProvidersFile, Document] | None) -> list[str]:
    problems: list[str] = []
    seen: dict[str, Document] = {}
    for pool, doc in pools:
        if pool.name in seen:
            problems.append(doc.problem(("name",), f"name: pool {pool.name!r} is also defined "
                                        f"in {seen[pool.name].file}"))
        seen[pool.name] = doc
    if providers is None:
        return problems
    spec, pdoc = providers
    names: set[str] = set()
    for i, provider in enumerate(spec.providers):
        if provider.name in names:
            problems.append(pdoc.problem(("providers", i, "name"),
                                         f"providers[{i}].name: duplicate provider {provider.name!r}"))
        names.add(provider.name)
    blueprint_names: set[str] = set()
    for i, blueprint in enumerate(spec.blueprints):
        if blueprint.name in blueprint_names:
            problems.append(pdoc.problem(("blueprints", i, "name"),
                                         f"blueprints[{i}].name: duplicate blueprint {blueprint.name!r}"))
        blueprint_names.add(blueprint.name)
        if blueprint.provider not in names:
            problems.append(pdoc.problem(("blueprints", i, "provider"),
                                         f"blueprints[{i}].provider: unknown provider "
                                         f"{blueprint.provider!r} (known: {', '.join(sorted(names))})"))
    for pool, doc in pools:
        for i, placement in enumerate(pool.placement):
            where = f"placement[{i}]"
            if spec.provider(placement.provider) is None:
                problems.append(doc.problem(("placement", i, "provider"),
                                            f"{where}.provider: unknown provider {placement.provider!r} "
                                            f"(known: {', '.join(sorted(names))})"))
                continue
            found = spec.blueprint(placement.blueprint)
            if found is None:
                known = sorted(b.name for b in spec.blueprints
                               if b.provider == placement.provider)
                problems.append(doc.problem(("placement", i, "blueprint"),
                                            f"{where}.blueprint: unknown blueprint "
                                            f"{placement.blueprint!r} (known on "
                                            f"{placement.provider}: "
                                            f"{', '.join(known) or 'none'})"))
            elif found.provider != placement.provider:
                problems.append(doc.problem(("placement", i, "blueprint"),
                                            f"{where}.blueprint: blueprint {found.name!r} belongs to "
                                            f"provider {found.provider!r}, not {placement.provider!r}"))
            elif found.node_profile != pool.selector.node_profile:
                problems.append(doc.problem(("placement", i, "blueprint"),
                                            f"{where}.blueprint: blueprint {found.name!r} makes "
                                            f"{found.node_profile!r} nodes but the pool selects "
                                            f"node_profile {pool.selector.node_profile!r}"))
    return problems


def _kind_settings_problems(spec: ProvidersFile, doc: Document,
                            kinds: KindSettings) -> list[str]:
    """Each provider's and each blueprint's ``settings:`` checked by its kind's own model.

    Only the file is looked at: no credential is read and nothing is connected to.
    """
    problems: list[str] = []
    checks: list[tuple[Path_, str, type[BaseModel] | None, dict[str, Any]]] = [
        (("providers", i, "settings"), f"provider {p.name} (kind {p.kind})",
         kinds.providers.get(p.kind), p.settings) for i, p in enumerate(spec.providers)]
    for i, blueprint in enumerate(spec.blueprints):
        provider = spec.provider(blueprint.provider)
        if provider is not None:  # an unknown provider is reported by _cross_check
            checks.append((("blueprints", i, "settings"),
                           f"blueprint {blueprint.name} (provider {provider.name}, "
                           f"kind {provider.kind})",
                           kinds.blueprints.get(provider.kind), blueprint.settings))
    for at, label, model, settings in checks:
        if model is None:
            continue
        try:
            model.model_validate(settings)
        except ValidationError as exc:
            problems.extend(_validation_problems(exc, doc, model, at=at, label=label))
    return problems


_Pools = list[tuple[PoolPolicy, Document]]
_Providers = list[tuple[ProvidersFile, Document]]


def _parse(files: Iterable[Path], problems: list[str], *,
           max_bytes: int) -> tuple[_Pools, _Providers]:
    """Every Pool and Providers document of ``files``, each checked on its own."""
    pools: _Pools = []
    providers: _Providers = []
    for file in files:
        for doc in read_documents(file, problems, max_bytes=max_bytes):
            if not isinstance(doc.data, dict):
                problems.append(doc.problem((), "expected a mapping with apiVersion and kind"))
                continue
            kind = doc.data.get("kind")
            model = _KINDS.get(kind) if isinstance(kind, str) else None
            if model is None:
                problems.append(doc.problem(("kind",), f"kind: expected one of "
                                            f"{', '.join(_KINDS)}, got {kind!r}"))
                continue
            try:
                parsed = model.model_validate(doc.data)
            except ValidationError as exc:
                problems.extend(_validation_problems(exc, doc, model))
                continue
            if isinstance(parsed, PoolPolicy):
                pools.append((parsed, doc))
            elif isinstance(parsed, ProvidersFile):
                providers.append((parsed, doc))
    return pools, providers


def _set_problems(pools: _Pools, providers: _Providers,
                  kinds: KindSettings | None) -> list[str]:
    """What only the whole set shows: a second Providers file, references, kind settings."""
    problems: list[str] = []
    if len(providers) > 1:
        for _, doc in providers[1:]:
            problems.append(doc.problem(("kind",), f"kind: a second Providers document "
                                        f"(the first is in {providers[0][1].file})"))
    problems.extend(_cross_check(pools, providers[0] if providers else None))
    if kinds is not None and providers:
        problems.extend(_kind_settings_problems(*providers[0], kinds))
    return problems


def load_policy_set(paths: Iterable[Path], *, kinds: KindSettings | None = None,
                    max_bytes: int = safeyaml.MAX_YAML_BYTES) -> PolicySet:
    """Load and validate every file (and every YAML file in every directory) given.

    With ``kinds``, each provider kind's ``settings:`` are validated by its own models too.
    A file larger than ``max_bytes`` is refused unread; an empty file is a problem (a policy
    file emptied by mistake must not silently drop its pool). Raises ConfigError listing
    every problem; nothing partial is ever returned. Blocking (file reads, parsing): the
    daemon calls it in a worker thread.
    """
    problems: list[str] = []
    files = _files_in(paths, problems)
    pools, providers = _parse(files, problems, max_bytes=max_bytes)
    problems.extend(_set_problems(pools, providers, kinds))
    if problems:  # a URL's credentials never reach validate, the log or /v1/status
        raise ConfigError([redact(problem) for problem in problems])
    ordered = sorted((p for p, _ in pools), key=lambda p: (-p.priority, p.name))
    return PolicySet(pools=tuple(ordered), providers=providers[0][0] if providers else None,
                     files=tuple(files))


def validate_paths(paths: Iterable[Path], *, kinds: KindSettings | None = None) -> list[str]:
    """Every problem in ``paths`` as ``FILE:LINE:COL: message`` lines (empty when valid)."""
    try:
        load_policy_set(paths, kinds=kinds)
    except ConfigError as exc:
        return exc.problems
    return []
