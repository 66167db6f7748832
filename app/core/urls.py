"""Every link the portal makes, built in one place (as Datasette's `Urls`): pages, the JSON API and exports
take their addresses from here, so a path is spelt once and the API's version prefix is written once.

Paths only (`/api/v1/datasets/brats-2021`); a caller that needs an absolute URL (schema.org, exports) puts the
server's base URL in front.
"""

from collections.abc import Iterable
from urllib.parse import quote, urlencode

API_PREFIX = "/api/v1"


def _segment(value: str) -> str:
    return quote(value, safe="")


def _query(pairs: Iterable[tuple[str, str]]) -> str:
    encoded = urlencode(list(pairs))
    return f"?{encoded}" if encoded else ""


class Urls:
    """Paths of the portal's pages (`page_*`) and JSON resources (the others)."""

    api_prefix = API_PREFIX

    def api(self, path: str) -> str:
        """Any API path: `api("/statistics")` -> `/api/v1/statistics`."""
        return f"{API_PREFIX}{path}"

    # -- catalog and search
    def page_dataset(self, slug: str) -> str:
        return f"/datasets/{_segment(slug)}"

    def dataset(self, slug: str) -> str:
        return self.api(f"/datasets/{_segment(slug)}")

    page_search_path = "/datasets"
    search_path = f"{API_PREFIX}/datasets"

    def search_export(self, suffix: str, query: str = "") -> str:
        """A search's export (`suffix`: csv, json, bib, jsonld, manifest.json); `query` as `?...` or empty."""
        return self.api(f"/datasets.{suffix}{query}")

    # -- selections and comparison
    def selection(self, selection_id: str) -> str:
        return self.api(f"/selections/{_segment(selection_id)}")

    def selection_export(self, read_id: str, suffix: str) -> str:
        """A selection's export (`suffix`: csv, json, bib, jsonld, manifest.json), under its read-only id."""
        return self.selection(read_id) + f"/export.{suffix}"

    def page_selection(self, read_id: str) -> str:
        """The read-only page a selection is shared as."""
        return f"/selections/{_segment(read_id)}"

    def compare(self, slugs: Iterable[str] = ()) -> str:
        return self.api("/compare") + _query(("d", slug) for slug in slugs)

    def page_compare(self, slugs: Iterable[str]) -> str:
        """The comparison page of `slugs` (always with its `?`, as links to it have been)."""
        return "/compare?" + urlencode([("d", slug) for slug in slugs])

    # -- plans
    def plan(self, plan_id: str) -> str:
        return self.api(f"/plans/{_segment(plan_id)}")

    def page_plan(self, plan_id: str) -> str:
        return f"/plans/{_segment(plan_id)}"

    # -- bundles
    bundles_path = f"{API_PREFIX}/bundles"

    def bundle(self, job_id: str) -> str:
        return self.api(f"/bundles/{_segment(job_id)}")

    def page_bundle(self, job_id: str) -> str:
        return f"/bundles/{_segment(job_id)}"

    def bundle_download(self, job_id: str) -> str:
        return self.bundle(job_id) + "/download"

    def bundle_items(self, job_id: str, query: str = "") -> str:
        return self.bundle(job_id) + "/items" + query


urls = Urls()

__all__ = ["API_PREFIX", "Urls", "urls"]
