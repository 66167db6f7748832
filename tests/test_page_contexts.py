"""Typed page contexts: every variable a page template reads is a field of its context class (or a helper
every template has), so a template's inputs are visible in one dataclass and checked by mypy where it is
built."""

from __future__ import annotations

import dataclasses

import pytest
from jinja2 import meta, nodes

from app.bundles.pages import BuildFormPage, BundleListPage, JobPage
from app.catalog.pages import DatasetPage
from app.core.errors import ErrorPage
from app.core.templating import PageContext, templates
from app.mdfp.pages import PlanFormPage, PlanPage
from app.search.pages import SearchPage, StatisticsPage
from app.selections.pages import ComparePage, SelectionPage, ToggledFragment

PAGES: list[tuple[str, type[PageContext]]] = [
    ("search/index.html", SearchPage),
    ("search/_region.html", SearchPage),
    ("search/_results_partial.html", SearchPage),
    ("search/_facet_partial.html", SearchPage),
    ("search/statistics.html", StatisticsPage),
    ("catalog/dataset.html", DatasetPage),
    ("selections/index.html", SelectionPage),
    ("selections/_region.html", SelectionPage),
    ("selections/_toggled.html", ToggledFragment),
    ("selections/compare.html", ComparePage),
    ("bundles/new.html", BuildFormPage),
    ("bundles/list.html", BundleListPage),
    ("bundles/_list.html", BundleListPage),
    ("bundles/job.html", JobPage),
    ("mdfp/new.html", PlanFormPage),
    ("mdfp/plan.html", PlanPage),
    ("error.html", ErrorPage),
    ("_error.html", ErrorPage),
]


@pytest.fixture(scope="module")
def helpers() -> set[str]:
    from app.main import create_app

    create_app()  # installs every domain's template helpers
    return set(templates.env.globals) | {"request"}


@pytest.mark.parametrize(("template", "context"), PAGES, ids=[name for name, _ in PAGES])
def test_a_page_template_reads_only_its_context_and_the_shared_helpers(
    template: str, context: type[PageContext], helpers: set[str]
) -> None:
    assert templates.env.loader is not None
    source = templates.env.loader.get_source(templates.env, template)[0]
    tree = templates.env.parse(source)
    wanted = meta.find_undeclared_variables(tree) - defined_in(tree)
    given = {field.name for field in dataclasses.fields(context)}
    assert wanted - given - helpers == set()


def defined_in(tree: nodes.Template) -> set[str]:
    """Names the template defines itself ({% set %}, macros, loop variables, imports): the analysis treats a
    name set at the top and read inside a block as undeclared, which it is not."""
    names = {node.name for node in tree.find_all(nodes.Name) if node.ctx in ("store", "param")}
    names |= {node.name for node in tree.find_all(nodes.Macro)}
    for node in tree.find_all(nodes.FromImport):
        names |= {alias if isinstance(alias, str) else alias[1] for alias in node.names}
    names |= {node.target for node in tree.find_all(nodes.Import)}
    return names


def test_every_context_is_a_frozen_dataclass() -> None:
    for _, context in PAGES:
        assert dataclasses.is_dataclass(context)
        assert context.__dataclass_params__.frozen  # type: ignore[attr-defined]
