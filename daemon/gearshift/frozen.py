"""A faster ``__init__`` for the frozen records built by the thousand on every snapshot.

A frozen dataclass refuses assignment in its own ``__setattr__``, so the ``__init__`` it
generates stores every field through ``object.__setattr__``: a global lookup, an attribute
lookup and a call per field. A simulated week of 2 000 nodes builds millions of ``Node``,
``NodeFacts`` and ``GearCounts`` records (every fact received, every node whose record a
snapshot rebuilds), and those ``__init__`` calls were a tenth of its run time
(bench/simulate.py, py-spy). ``fast_init`` gives a frozen, slotted dataclass an
``__init__`` that stores through each slot's own descriptor instead: the same signature,
defaults and default factories, the same objects (tests/test_frozen_init.py compares every
field with the generated ``__init__``'s), in about 60 % of the time. Only ``__init__``
changes: the class stays frozen (assigning afterwards still raises), hashable and
comparable as before.

It refuses (TypeError) the classes it would get wrong: one that is not a frozen, slotted
dataclass, or has ``__post_init__``, keyword-only or non-init fields.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")

_FACTORY = object()  # "use the default factory": no caller can pass this


def fast_init(cls: type[T]) -> type[T]:
    """Replace the generated ``__init__`` of the frozen, slotted dataclass ``cls``."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"fast_init: {cls.__name__} is not a frozen, slotted dataclass")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"fast_init: {cls.__name__} has __post_init__")
    namespace: dict[str, Any] = {"_FACTORY": _FACTORY}
    arguments, lines = [], []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]  # (a dataclass: checked above)
        if not f.init or f.kw_only:
            raise TypeError(f"fast_init: {cls.__name__}.{f.name} is not a plain init field")
        name = f.name
        namespace[f"_set_{name}"] = getattr(cls, name).__set__  # the slot's descriptor
        value = name
        if f.default is not dataclasses.MISSING:
            namespace[f"_default_{name}"] = f.default
            arguments.append(f"{name}=_default_{name}")
        elif f.default_factory is not dataclasses.MISSING:
            namespace[f"_factory_{name}"] = f.default_factory
            arguments.append(f"{name}=_FACTORY")
            value = f"_factory_{name}() if {name} is _FACTORY else {name}"
        else:
            arguments.append(name)
        lines.append(f"    _set_{name}(self, {value})")
    body = lines or ["    pass"]
    source = "\n".join([f"def __init__(self, {', '.join(arguments)}):", *body])
    # (What dataclasses itself does: the source names only the class's own fields.)
    exec(compile(source, f"<fast_init {cls.__qualname__}>", "exec"), namespace)
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    init.__wrapped_dataclass_init__ = cls.__init__  # what the tests compare it with
    setattr(cls, "__init__", init)  # noqa: B010  # (mypy: a method cannot be assigned)
    return cls
