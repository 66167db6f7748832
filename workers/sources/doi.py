"""`doi` sources: a DOI, resolved when the source is fetched and handed to the adapter of the host it lands on.

- DOIs of known registrants need no round trip: `10.5281/zenodo.<N>` is Zenodo record N, and
  `10.6084/m9.figshare.<N>[.v<V>]` figshare article N (version V).
- Any other DOI: `GET {doi_resolver_url}/<doi>` (doi.org answers a redirect to the landing page), following the
  redirects hop by hop (each hop's address checked, as for every request) and stopping at the first address a
  rule recognises, so the landing page itself is not fetched:
  - a Zenodo record: `zenodo.org` or the origin of `zenodo_api_url`, path `/records/<N>` or `/record/<N>`;
  - a figshare article: `figshare.com`, an institutional `*.figshare.com` portal or the origin of
    `figshare_api_url`, path `/articles/[<type>/<title>/]<N>[/<V>]`;
  - a Dataverse dataset page at any host: `.../dataset.xhtml?persistentId=doi:...` or
    `.../citation?persistentId=doi:...`; the dataverse adapter then asks that installation's API.
  Anywhere else: SourceError naming the landing URL and saying no adapter handles that host.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, quote, urljoin, urlsplit

import httpx

from app.common.descriptors import DataverseSource, DoiSource, FigshareSource, ZenodoSource
from app.core.config import Settings
from workers.safety import UnsafeSourceError
from workers.sources import dataverse, figshare, zenodo
from workers.sources.base import NO_OPTIONS, FetchOptions, RemoteFile, SourceError, origin_of
from workers.sources.net import open_response

MAX_HOPS = 10
_ZENODO_DOI = re.compile(r"^10\.5281/zenodo\.(\d+)$", re.IGNORECASE)
_FIGSHARE_DOI = re.compile(r"^10\.6084/m9\.figshare\.(\d+)(?:\.v(\d+))?$", re.IGNORECASE)
_ZENODO_PATH = re.compile(r"^/records?/(\d+)/?$")

Target = ZenodoSource | FigshareSource | DataverseSource


def resolve(
    source: DoiSource, settings: Settings, client: httpx.Client, options: FetchOptions = NO_OPTIONS
) -> list[RemoteFile]:
    target = landing_source(source, settings, client)
    if isinstance(target, ZenodoSource):
        return zenodo.resolve(target, settings, client, options)
    if isinstance(target, FigshareSource):
        return figshare.resolve(target, settings, client, options)
    return dataverse.resolve(target, settings, client, options)


def landing_source(source: DoiSource, settings: Settings, client: httpx.Client) -> Target:
    """The descriptor of what the DOI names (module docstring), with the source's `include` globs."""
    include = list(source.include)
    if match := _ZENODO_DOI.match(source.doi):
        return ZenodoSource(kind="zenodo", record=match[1], include=include)
    if match := _FIGSHARE_DOI.match(source.doi):
        version = int(match[2]) if match[2] else None
        return FigshareSource(kind="figshare", article=match[1], version=version, include=include)
    what = f"DOI {source.doi}"
    url = f"{settings.doi_resolver_url.rstrip('/')}/{quote(source.doi, safe='/:;()[]._-')}"
    for _ in range(MAX_HOPS):
        try:
            response, _ = open_response(client, url, settings, follow_redirects=False)
            response.close()
        except UnsafeSourceError as exc:
            raise SourceError(f"{what}: {exc}") from exc
        except httpx.HTTPError as exc:
            raise SourceError(f"{what}: GET {url} failed: {exc}") from exc
        if not (response.is_redirect and "location" in response.headers):
            if response.status_code == 404:
                raise SourceError(f"{what}: the resolver knows no such DOI (HTTP 404 from {url})")
            raise SourceError(
                f"{what} lands on {url}, and no adapter handles {urlsplit(url).hostname} (known: Zenodo "
                "records, figshare articles, Dataverse datasets); describe its files as an `http` source"
            )
        url = urljoin(url, response.headers["location"])
        target = _recognised(url, settings, include)
        if target is not None:
            return target
    raise SourceError(f"{what}: more than {MAX_HOPS} redirects (last {url})")


def _recognised(url: str, settings: Settings, include: list[str]) -> Target | None:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    origin = origin_of(url)
    if (host in ("zenodo.org", "www.zenodo.org") or origin == origin_of(settings.zenodo_api_url)) and (
        match := _ZENODO_PATH.match(parts.path)
    ):
        return ZenodoSource(kind="zenodo", record=match[1], include=include)
    figshare_host = host == "figshare.com" or host.endswith(".figshare.com")
    if figshare_host or origin == origin_of(settings.figshare_api_url):
        article = _figshare_article(parts.path)
        if article is not None:
            number, version = article
            return FigshareSource(kind="figshare", article=number, version=version, include=include)
    persistent_id = (parse_qs(parts.query).get("persistentId") or [""])[0]
    page = re.match(r"^(?P<base>.*)/(dataset\.xhtml|citation)$", parts.path)
    if page and persistent_id.lower().startswith("doi:"):
        server = f"{parts.scheme}://{parts.netloc}{page['base']}"
        return DataverseSource(kind="dataverse", server=server, doi=persistent_id[4:], include=include)
    return None


def _figshare_article(path: str) -> tuple[str, int | None] | None:
    """(article id, version) from `/articles/<type>/<title>/<id>[/<version>]` or `/articles/<id>`."""
    segments = [s for s in path.split("/") if s]
    if not segments or segments[0] != "articles" or not segments[-1].isdigit():
        return None
    # a version is a small number after the id; a title made of digits is not one
    if len(segments) >= 3 and segments[-2].isdigit() and len(segments[-1]) <= 3:
        return segments[-2], int(segments[-1])
    return segments[-1], None
