"""`figshare` sources: the files of a figshare article, from `GET {api}/articles/{id}/files`, with md5.

figshare gives each uploaded file a `computed_md5`; files that are only links to another host carry none and
cannot be verified, so they are refused with the reason (describe that host's files as an `http` source).

The article itself (`GET {api}/articles/{id}[/versions/{v}]`) states its licence (`license.name`, e.g. "CC BY
4.0") and DOI; both travel with every file (RemoteFile.stated_*). An article whose metadata cannot be read
(the host answers an error for it while listing its files) is fetched without them: the licence then comes
from the catalog, as for hosts that state none.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import httpx

from app.common.descriptors import FigshareSource
from app.core.config import Settings
from workers.sources.base import NO_OPTIONS, FetchOptions, RemoteFile, SourceError, chosen, included
from workers.sources.net import HttpStatusError, fetch_json

PAGE_SIZE = 1000  # figshare's largest page: one request for all but the largest articles
MAX_PAGES = 100  # 100,000 files: beyond that a listing that never ends is an error, not a loop


def resolve(
    source: FigshareSource, settings: Settings, client: httpx.Client, options: FetchOptions = NO_OPTIONS
) -> list[RemoteFile]:
    what = f"figshare article {source.article}"
    base = f"{settings.figshare_api_url.rstrip('/')}/articles/{source.article}"
    if source.version is not None:
        base += f"/versions/{source.version}"
    entries = _all_files(client, f"{base}/files", settings, what)
    if not entries:
        raise SourceError(f"{what} lists no files")
    remote_files = []
    for entry in entries:
        name, url = entry.get("name"), entry.get("download_url")
        if not name or not url:
            raise SourceError(f"{what}: a file entry has no name or download_url: {entry}")
        if not included(name, source.include):
            continue
        md5 = str(entry.get("computed_md5") or entry.get("supplied_md5") or "").lower()
        if entry.get("is_link_only") or not md5:
            raise SourceError(
                f"{what}: file {name} is a link to another host with no checksum; describe that host's files "
                "as an `http` source with their sha256"
            )
        remote_files.append(RemoteFile(name=name, url=url, size=entry.get("size"), md5=md5))
    licence, doi = _article_terms(client, base, settings, what)
    if licence or doi:
        remote_files = [
            replace(r, stated_licence=licence, stated_doi=doi, stated_by=what) for r in remote_files
        ]
    return chosen(remote_files, source.include, what)


def stated_terms(article: Any) -> tuple[str, str]:
    """(licence, DOI) as a figshare article states them, "" where it states none: `license` is
    {"value", "name", "url"} (the name as written, else the URL), `doi` a bare DOI."""
    if not isinstance(article, dict):
        return "", ""
    stated = article.get("license")
    licence = ""
    if isinstance(stated, dict):
        licence = str(stated.get("name") or stated.get("url") or "").strip()
    elif isinstance(stated, str):
        licence = stated.strip()
    return " ".join(licence.split()), str(article.get("doi") or "").strip()


def _article_terms(client: httpx.Client, base: str, settings: Settings, what: str) -> tuple[str, str]:
    try:
        article, _ = fetch_json(client, base, settings, what)
    except HttpStatusError:
        return "", ""  # the files are what was asked for; the licence falls back to the catalog's
    return stated_terms(article)


def _all_files(client: httpx.Client, url: str, settings: Settings, what: str) -> list[dict[str, Any]]:
    """Every file entry, page by page: a full page means there may be another."""
    entries: list[dict[str, Any]] = []
    for page in range(1, MAX_PAGES + 1):
        batch, _ = fetch_json(client, f"{url}?page={page}&page_size={PAGE_SIZE}", settings, what)
        if not isinstance(batch, list):
            raise SourceError(f"{what}: the file list is not a list")
        entries.extend(batch)
        if len(batch) < PAGE_SIZE:
            return entries
    raise SourceError(f"{what} lists more than {MAX_PAGES * PAGE_SIZE:,} files")
