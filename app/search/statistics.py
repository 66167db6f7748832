"""Catalog statistics: the distribution of every charted facet over the whole catalog, and the survey's
taxonomy tree (dimension > modality > task or organ), each kept per catalog version."""

from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from app.catalog.service import catalog_key
from app.core.cache import VersionedCache
from app.core.urls import urls
from app.search.facets import facet_counts, value_label
from app.search.filters import query_string
from app.search.index import current_index
from app.search.schemas import SearchFilter

STATISTIC_FACETS = ("modality", "dim", "task", "anatomy", "access", "year", "size", "host", "labeled")


def catalog_statistics(session: Session) -> dict[str, Any]:
    """Distributions over the whole catalog (charts link each bar to the filtered search) and the taxonomy.
    A new dict each call (callers may replace its keys); the values are shared and read-only."""
    key = catalog_key(session)
    return dict(_statistics.get_or_compute(key, lambda: _catalog_statistics(session, key[1])))


_statistics: VersionedCache[dict[str, Any]] = VersionedCache(maxsize=4)


def _catalog_statistics(session: Session, version: int) -> dict[str, Any]:
    index = current_index(session, version)
    facets = facet_counts(index, SearchFilter(), index.all, [], 10_000, urls.page_search_path)
    distributions = {f.name: f for f in facets if f.name in STATISTIC_FACETS}
    return {
        "catalog_version": version,
        "datasets": index.size,
        "images_known": int((index.images >= 0).sum()),
        "images_total": int(index.images[index.images >= 0].sum()),
        "distributions": distributions,
        "taxonomy": taxonomy(session),
    }


def taxonomy(session: Session) -> dict[str, Any]:
    """The survey's taxonomy as a tree: dimension > modality > (task | organ), every node linking to its search."""
    rows = session.execute(
        text(
            "SELECT d, m, 'total' AS kind, '' AS value, count(*) AS n FROM dataset, unnest(dims) d, "
            "unnest(modalities) m GROUP BY d, m "
            "UNION ALL SELECT d, m, 'task', t, count(*) FROM dataset, unnest(dims) d, "
            "unnest(modalities) m, unnest(tasks) t GROUP BY d, m, t "
            "UNION ALL SELECT d, m, 'anatomy', a, count(*) FROM dataset, unnest(dims) d, "
            "unnest(modalities) m, unnest(anatomies) a GROUP BY d, m, a"
        )
    ).all()
    dims: dict[str, dict[str, Any]] = {}
    for dim, modality, kind, value, n in rows:
        dim_node = dims.setdefault(dim, _node(dim, {"dim": dim}))
        mod_node = dim_node["children"].setdefault(
            modality, _node(value_label("modality", modality), {"dim": dim, "modality": modality})
        )
        if kind == "total":
            mod_node["value"] = n
            dim_node["value"] += n
        else:
            leaf = _node(value_label(kind, value), {"dim": dim, "modality": modality, kind: value}, value=n)
            leaf["kind"] = kind
            mod_node["children"][f"{kind}:{value}"] = leaf
    root = _node("All datasets", {}, value=sum(d["value"] for d in dims.values()))
    root["children"] = dims
    return _as_lists(root)


def _node(name: str, filters: dict[str, str], value: int = 0) -> dict[str, Any]:
    return {
        "name": name,
        "value": value,
        "url": urls.page_search_path + query_string(list(filters.items())),
        "children": {},
    }


def _as_lists(node: dict[str, Any]) -> dict[str, Any]:
    children = sorted(node.pop("children").values(), key=lambda c: -c["value"])
    if children:
        node["children"] = [_as_lists(child) for child in children]
    return node
