"""One URL builder: the portal's paths come from app/core/urls.py; no other module spells the API prefix."""

from __future__ import annotations

import ast
from pathlib import Path

from app.core.urls import API_PREFIX, urls

APP = Path(__file__).resolve().parents[1] / "app"


def _code_strings(tree: ast.AST) -> list[str]:
    """String constants used as values (f-string parts included), not docstrings or other bare strings."""
    bare = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in bare
    ]


def test_no_module_but_the_builder_writes_the_api_prefix() -> None:
    offenders = []
    for path in sorted(APP.rglob("*.py")):
        if path == APP / "core" / "urls.py":
            continue
        strings = _code_strings(ast.parse(path.read_text()))
        # a path or pattern (no spaces; prose such as a CLI help text may name an endpoint; other hosts' APIs
        # are theirs)
        offenders += [
            f"{path.relative_to(APP)}: {s!r}"
            for s in strings
            if API_PREFIX in s and " " not in s and not s.startswith("http")
        ]
    assert offenders == []


def test_the_builder_makes_the_paths_the_routes_serve() -> None:
    assert urls.dataset("brats-2021") == "/api/v1/datasets/brats-2021"
    assert urls.page_dataset("brats-2021") == "/datasets/brats-2021"
    assert urls.selection("abc") == "/api/v1/selections/abc"
    assert urls.plan("p1") == "/api/v1/plans/p1"
    assert urls.bundle_download("j1") == "/api/v1/bundles/j1/download"
    assert urls.bundle_items("j1", "?offset=10") == "/api/v1/bundles/j1/items?offset=10"
    assert urls.page_compare(["a", "b c"]) == "/compare?d=a&d=b+c"
    assert urls.compare(["a", "b"]) == "/api/v1/compare?d=a&d=b"
    assert urls.search_export("csv", "?modality=CT") == "/api/v1/datasets.csv?modality=CT"
    # a path segment is quoted: an id can never add a path of its own
    assert urls.bundle("../x") == "/api/v1/bundles/..%2Fx"


def test_every_built_api_path_is_a_route_of_the_app() -> None:
    from starlette.routing import Match

    from app.main import create_app

    app = create_app()
    built = [
        urls.dataset("brats-2021"),
        urls.selection("abc"),
        urls.compare(["a", "b"]),
        urls.plan("p1"),
        urls.bundle("j1"),
        urls.bundle_download("j1"),
        urls.bundle_items("j1"),
        urls.bundles_path,
        urls.search_path,
        urls.search_export("csv"),
        urls.api("/statistics"),
        urls.api("/plans/schema"),
    ]
    for path in built:
        scope = {"type": "http", "path": path.split("?", 1)[0], "method": "GET", "root_path": ""}
        assert any(route.matches(scope)[0] == Match.FULL for route in app.routes), path
