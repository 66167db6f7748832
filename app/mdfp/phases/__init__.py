"""The four MDFP phases, as in the survey's figure: pure functions of (catalog snapshot, spec).

Each phase returns a JSON-ready dict shaped like `app.mdfp.schemas.Phase`: headline facts, tables (rows keyed
by column) and chart data (categories and series, independent of the drawing library). Plain dicts rather than
pydantic objects because the final list and the rejected list hold one row per dataset (tens of thousands on a
large catalog) and are only ever serialised. Every list is in a defined order (vocabulary order for terms,
rank or rule-then-slug for datasets), so the same inputs give byte-identical plans.

One module per phase, in the order they run:

- `harmonisation`: phase 1, the whole catalog's landscape on the shared vocabularies;
- `alignment`: phase 2, the candidates that cover the target task types and dimensionality;
- `blueprint`: phase 3, the rules and selection constraints and what the selection holds;
- `indexing`: phase 4, the final list, the rejected candidates and the curated summary;

with `planner` (`plan_phases`: the four phases from one rule evaluation), `survey` (the survey's published
example, and why a plan's numbers differ from it: a table of phase 4), `summary` (the per-modality summary
rows that phases 3 and 4 and the survey comparison share) and `common` (labels and the JSON shapes of facts,
tables and charts).

Imports go one way: `planner` imports the phases and `survey`; those import `summary` and `common` only;
nothing in the package imports `planner` but this file, so no import cycle runs through the package. This
file re-exports the public names, so callers import from `app.mdfp.phases`.
"""

from app.mdfp.phases.alignment import alignment
from app.mdfp.phases.blueprint import blueprint
from app.mdfp.phases.common import label, labels, table_rows
from app.mdfp.phases.harmonisation import FAMILIES, FAMILY_OF, harmonisation
from app.mdfp.phases.indexing import (
    FINAL_FIELDS,
    FINAL_LIST_CHART_SIZE,
    REJECTED_FIELDS,
    final_list,
    indexing,
    rejected_list,
)
from app.mdfp.phases.planner import plan_phases
from app.mdfp.phases.summary import COUNTING_NOTE, modality_rows, total_row

__all__ = [
    "COUNTING_NOTE",
    "FAMILIES",
    "FAMILY_OF",
    "FINAL_FIELDS",
    "FINAL_LIST_CHART_SIZE",
    "REJECTED_FIELDS",
    "alignment",
    "blueprint",
    "final_list",
    "harmonisation",
    "indexing",
    "label",
    "labels",
    "modality_rows",
    "plan_phases",
    "rejected_list",
    "table_rows",
    "total_row",
]
