"""The MDFP planner: the four phases for one spec on one snapshot, in order, from one rule evaluation."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from app.mdfp.phases.alignment import alignment
from app.mdfp.phases.blueprint import blueprint
from app.mdfp.phases.harmonisation import harmonisation
from app.mdfp.phases.indexing import indexing
from app.mdfp.phases.summary import modality_rows
from app.mdfp.phases.survey import survey_comparison
from app.mdfp.rules import evaluate
from app.mdfp.schemas import PlanSpec
from app.mdfp.snapshot import PlanningSnapshot


def plan_phases(
    snapshot: PlanningSnapshot, spec: PlanSpec, with_comparison: bool = True
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """(the four phases, the curated summary rows, the final list's slugs) for one spec on one snapshot."""
    with _collector_paused():
        # the rules are evaluated once; every phase and the survey comparison read the same evaluation
        ev = evaluate(snapshot, spec)
        comparison = survey_comparison(snapshot, spec, ev) if with_comparison else None
        phases = [
            harmonisation(snapshot, spec),
            alignment(snapshot, spec, ev),
            blueprint(snapshot, spec, ev),
            indexing(snapshot, spec, ev, comparison),
        ]
        summary = modality_rows(snapshot, ev, ev.final)
        slugs = [snapshot.slugs[p] for p in ev.final_order.tolist()]
        return phases, summary, slugs


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a plan is built.

    A large plan allocates one container per dataset row (about 60,000 at 100,000 datasets); each burst of
    allocations triggers a collection that walks every live object, which doubled the planning time in
    bench/mdfp. Nothing built here forms a cycle, so deferring collection loses nothing.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
