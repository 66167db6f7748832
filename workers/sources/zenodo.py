"""`zenodo` sources: the files of a Zenodo record, from the record API (`GET {api}/records/{id}`), with md5."""

from __future__ import annotations

from typing import Any

import httpx

from app.common.descriptors import ZenodoSource
from app.core.config import Settings
from workers.sources.base import NO_OPTIONS, FetchOptions, RemoteFile, SourceError, chosen, included
from workers.sources.net import fetch_json


def _entries(files: Any) -> list[dict[str, Any]]:
    # the legacy API answers a list; InvenioRDM's files endpoint answers {"entries": [...] or {key: {...}}}
    if isinstance(files, dict):
        files = files.get("entries", [])
        if isinstance(files, dict):
            files = list(files.values())
    return [entry for entry in files or [] if isinstance(entry, dict)]


def _text(value: Any) -> str:
    """A licence as Zenodo writes it: an id string, {"id": ...}, or InvenioRDM's {"id", "title": {"en": ...}}."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, dict):
        title = value.get("title")
        if isinstance(title, dict):
            title = title.get("en") or next(iter(title.values()), "")
        return str(value.get("id") or title or "").strip()
    return ""


def stated_terms(record: dict[str, Any]) -> tuple[str, str]:
    """(licence, DOI) as the record states them, "" where it states none: the legacy API's
    `metadata.license`, InvenioRDM's `metadata.rights`; `doi`, `metadata.doi` or `pids.doi.identifier`."""
    metadata = record.get("metadata") or {}
    licence = _text(metadata.get("license"))
    rights = metadata.get("rights")
    if not licence and isinstance(rights, list):
        licence = next((text for text in (_text(r) for r in rights) if text), "")
    pids = record.get("pids") or {}
    doi = record.get("doi") or metadata.get("doi") or ((pids.get("doi") or {}).get("identifier"))
    return licence, str(doi or "").strip()


def resolve(
    source: ZenodoSource, settings: Settings, client: httpx.Client, options: FetchOptions = NO_OPTIONS
) -> list[RemoteFile]:
    what = f"Zenodo record {source.record}"
    record, _ = fetch_json(
        client, f"{settings.zenodo_api_url.rstrip('/')}/records/{source.record}", settings, what
    )
    entries = _entries(record.get("files"))
    if not entries:
        access = (record.get("metadata") or {}).get("access_right") or (record.get("access") or {}).get(
            "files"
        )
        raise SourceError(f"{what} lists no downloadable files (access: {access or 'unknown'})")
    licence, doi = stated_terms(record)
    remote_files = []
    for entry in entries:
        name = entry.get("key") or entry.get("filename")
        links = entry.get("links") or {}
        url = links.get("content") or links.get("self") or links.get("download")
        checksum = str(entry.get("checksum") or "")
        algorithm, _, digest = checksum.rpartition(":")
        if not name or not url:
            raise SourceError(f"{what}: a file entry has no name or link: {entry}")
        if not included(name, source.include):
            continue
        if (algorithm or "md5") != "md5" or not digest:
            raise SourceError(f"{what}: file {name} has no md5 checksum ({checksum or 'none'})")
        remote_files.append(
            RemoteFile(
                name=name,
                url=url,
                size=entry.get("size"),
                md5=digest.lower(),
                stated_licence=licence,
                stated_doi=doi,
                stated_by=what,
            )
        )
    return chosen(remote_files, source.include, what)
