"""``gearshift.frozen.fast_init``: the same records as the dataclass ``__init__``, still frozen."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

from gearshift import model, plan
from gearshift.frozen import fast_init

FAST = [c for module in (model, plan) for c in vars(module).values()
        if isinstance(c, type) and c.__module__ == module.__name__
        and hasattr(vars(c).get("__init__"), "__wrapped_dataclass_init__")]


def _slots(obj: object) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}  # type: ignore[arg-type]


def _value(rng: random.Random) -> object:
    return rng.choice([None, 0, 7, 2.5, "x", True, (1, 2), {"a": "b"}])


def test_the_hot_records_use_it() -> None:
    assert {c.__name__ for c in FAST} >= {"Node", "NodeFacts", "GearCounts", "PendingNode",
                                          "DrainProgress", "ProviderStatus", "PoolEvaluation",
                                          "PoolMemory"}


@pytest.mark.parametrize("cls", FAST, ids=lambda c: c.__name__)
def test_same_fields_as_the_dataclass_init(cls: type) -> None:
    rng = random.Random(cls.__name__)
    generated = vars(cls)["__init__"].__wrapped_dataclass_init__
    fields = dataclasses.fields(cls)
    required = [f for f in fields
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    for _ in range(50):
        given = {f.name: _value(rng) for f in fields if f in required or rng.random() < 0.5}
        fast = cls(**given)
        slow: Any = object.__new__(cls)
        generated(slow, **given)
        assert _slots(fast) == _slots(slow)
        positional = cls(*[given.get(f.name) for f in required])
        slow = object.__new__(cls)
        generated(slow, *[given.get(f.name) for f in required])
        assert _slots(positional) == _slots(slow)


def test_defaults_factories_and_errors_are_the_dataclass_ones() -> None:
    a = model.NodeFacts(identity="n", node_profile="small", max_active_gears=60,
                        gears=model.GearCounts(active=3))
    b = model.NodeFacts(identity="n", node_profile="small", max_active_gears=60,
                        gears=model.GearCounts(active=3))
    assert a == b and hash(a.gears) == hash(model.GearCounts(active=3))
    assert a.labels == {} and a.labels is not b.labels  # a fresh mapping each, as before
    assert a.district_active is True and a.gears.total == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.identity = "m"  # type: ignore[misc]
    with pytest.raises(TypeError, match="identity"):
        model.NodeFacts(node_profile="small", max_active_gears=60,  # type: ignore[call-arg]
                        gears=model.GearCounts())
    with pytest.raises(TypeError, match="unexpected keyword"):
        model.GearCounts(nope=1)  # type: ignore[call-arg]
    assert dataclasses.replace(a, identity="m").identity == "m"


def test_refuses_what_it_would_get_wrong() -> None:
    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        x: int

    @dataclasses.dataclass(slots=True)
    class NotFrozen:
        x: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class PostInit:
        x: int

        def __post_init__(self) -> None:
            pass

    @dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
    class KeywordOnly:
        x: int

    for cls in (NoSlots, NotFrozen, PostInit, KeywordOnly):
        with pytest.raises(TypeError, match="fast_init"):
            fast_init(cls)
