"""The plan's wire format (api_models): every action kind goes plan -> JSON -> plan whole,
and a new action kind in model.py cannot ship without its wire model."""

from __future__ import annotations

import json
import typing
from dataclasses import fields

from hypothesis import given
from hypothesis import strategies as st

from gearshift import api_models
from gearshift.api_models import PlanModel
from gearshift.explain import plan_to_dict
from gearshift.model import (
    Abandon,
    Action,
    CancelDrain,
    Candidate,
    DestroyAgain,
    Drain,
    NodeCandidate,
    Park,
    Resume,
    Retire,
    RetireParked,
    ScaleOut,
)
from gearshift.plan import Plan, PlannerState, PoolEvaluation

text = st.text(max_size=12)
maybe_float = st.none() | st.floats(allow_nan=False, allow_infinity=False)
candidates = st.builds(Candidate, provider=text, blueprint=text, chosen=st.integers(),
                       free=st.integers(), note=text, rank=st.none() | st.integers(),
                       cost_per_hour=maybe_float, time_to_ready=maybe_float)
node_candidates = st.builds(NodeCandidate, identity=text, provider=st.none() | text,
                            chosen=st.booleans(), note=text)
ACTIONS: dict[type, st.SearchStrategy[typing.Any]] = {
    ScaleOut: st.builds(ScaleOut, pool=text, provider=text, blueprint=text,
                        count=st.integers(), reason=text,
                        candidates=st.lists(candidates, max_size=3).map(tuple),
                        replaces=st.lists(text, max_size=3).map(tuple), warm=st.booleans()),
    Drain: st.builds(Drain, pool=text, identity=text, reason=text,
                     cause=st.sampled_from(typing.get_args(typing.get_type_hints(Drain)["cause"])),
                     preempted_by=st.none() | text,
                     candidates=st.lists(node_candidates, max_size=3).map(tuple)),
    CancelDrain: st.builds(CancelDrain, pool=text, identity=text, reason=text),
    Retire: st.builds(Retire, pool=text, identity=text, provider=text, machine_id=text,
                      reason=text),
    Abandon: st.builds(Abandon, pool=text, identity=text, provider=text, machine_id=text,
                       op_id=text, reason=text, timeout=st.floats(0, 1e6), waited=st.floats(0, 1e6),
                       resumed=st.booleans()),
    DestroyAgain: st.builds(DestroyAgain, pool=text, identity=text, provider=text,
                            machine_id=text, op_id=text, reason=text),
    **{kind: st.builds(kind, pool=text, identity=text, provider=text, machine_id=text,
                       reason=text) for kind in (Park, Resume, RetireParked)},
}
evaluations = st.builds(PoolEvaluation, pool=text, active=st.integers(), booting=st.integers(),
                        draining=st.integers(), unknown=st.integers(),
                        active_gears=st.integers(), capacity_gears=st.integers(),
                        active_density=maybe_float, desired_nodes=st.integers(),
                        degraded=st.booleans(), summary=text, paused=st.booleans())
plans = st.builds(
    Plan,
    at=st.integers(min_value=0, max_value=4_000_000_000).map(float),  # the wire keeps seconds
    actions=st.lists(st.one_of(*ACTIONS.values()), max_size=6).map(tuple),
    pools=st.dictionaries(text, evaluations, max_size=3),
    state=st.just(PlannerState()))


def test_every_action_kind_has_a_wire_model_with_its_fields() -> None:
    kinds = typing.get_args(Action)
    assert set(kinds) == set(ACTIONS), "add the new kind to ACTIONS above"
    for kind in kinds:
        model = api_models._BY_DOMAIN.get(kind)
        assert model is not None, f"{kind.__name__} has no wire model in api_models"
        assert {f.name for f in fields(kind)} <= set(model.model_fields)


@given(plans)
def test_plan_round_trips_through_json(plan: Plan) -> None:
    wire = json.loads(json.dumps(plan_to_dict(plan)))
    back = PlanModel.model_validate(wire).to_plan()
    assert back.at == plan.at
    assert back.actions == plan.actions
    assert dict(back.pools) == dict(plan.pools)
    assert [a["kind"] for a in wire["actions"]] == [a.kind for a in plan.actions]


@given(st.one_of(*ACTIONS.values()))
def test_every_action_keeps_the_keys_it_always_had(action: Action) -> None:
    """kind, the dataclass's fields, and candidates (empty for reactivations and retirements)."""
    item = plan_to_dict(Plan(at=0.0, actions=(action,), pools={},
                             state=PlannerState()))["actions"][0]
    assert list(item) == ["kind", *(f.name for f in fields(action) if f.name != "candidates"),
                          "candidates"]


def test_events_keep_the_body_they_always_had() -> None:
    """/v1/events through EventsModel: the executor's event, its time as ISO seconds."""
    from dataclasses import asdict

    from gearshift.act.progress import Event
    from gearshift.api_models import EventModel, EventsModel, iso_time

    events = [Event(at=1_700_000_000.0, kind="drain", pool="small", target="node-3",
                    outcome="failed", reason="density low", error="boom"),
              Event(at=1_700_000_010.0, kind="scale_out", pool="small", target="n-9",
                    outcome="ok", reason="up")]
    body = EventsModel(events=[EventModel.from_event(e) for e in events]).model_dump(mode="json")
    assert body == {"events": [{**asdict(e), "at": iso_time(e.at)} for e in events]}
    assert list(body["events"][0]) == [f.name for f in fields(Event)]


def test_the_daemons_status_parts_keep_their_shape_and_fit_the_schema() -> None:
    """The daemon's parts of /v1/status (a refused message and an untrusted node included,
    which a healthy live daemon never shows) come out as the producers' dicts went in, in
    order, and fit the generated Status schema; without them the keys are left out."""
    import jsonschema  # type: ignore[import-untyped]  # no stubs installed

    from gearshift.api.models_status import StatusExtrasModel, StatusModel
    from gearshift.api.openapi import openapi_document

    extras = {
        "leadership": {"holder": "vm:1:ab", "token": None, "terms": 0, "journal": "sqlite"},
        "operations": {"create": {"count": 1, "oldest_age_seconds": 12.5,
                                  "phases": {"requested": 1}}},
        "recoveries": {"performed": 2, "incomplete": True},
        "untrusted": {
            "nodes": [{"identity": "n1", "state": "unvouched", "reason": "not ours and not "
                       "a district member", "ours": False, "last_seen": 99.0}],
            "counts": {"not ours and not a district member": 1},
            "refused": [{"identity": "n2", "reason": "bad signature", "detail": "key k1",
                         "at": 98.0}],
            "disputed": {"n3": "the platform says it is gone"}},
    }
    bare = {"pools": {}, "leader": True, "facts_fresh": False, "last_reconcile": None,
            "providers": {}, "policy_errors": ["a.yaml:1:1: bad"], "decisions": []}
    assert StatusModel.model_validate(bare).to_json() == bare
    status = StatusModel(**bare, **dict(StatusExtrasModel.model_validate(extras)))
    body = status.to_json()
    assert body == {**bare, **extras}
    assert json.dumps(body) == json.dumps({**bare, **extras})  # the same order too
    components = openapi_document(pools=[], max_body=1)["components"]
    jsonschema.Draft202012Validator(
        {"$ref": "#/components/schemas/Status", "components": components}).validate(body)
