"""`huggingface` sources: the files of a dataset repo on the Hub at one revision.

The revision (branch or tag) is pinned to its commit first, so every file comes from the same commit. LFS files
carry their sha256; the others are verified by their git blob id."""

from __future__ import annotations

from urllib.parse import quote

import httpx

from app.common.descriptors import HuggingFaceSource
from app.core.config import Settings
from workers.sources.base import NO_OPTIONS, FetchOptions, RemoteFile, SourceError, chosen, included
from workers.sources.net import fetch_json


def resolve(
    source: HuggingFaceSource, settings: Settings, client: httpx.Client, options: FetchOptions = NO_OPTIONS
) -> list[RemoteFile]:
    hub = settings.huggingface_url.rstrip("/")
    what = f"Hugging Face dataset {source.repo}@{source.revision}"
    try:
        info, _ = fetch_json(
            client,
            f"{hub}/api/datasets/{source.repo}/revision/{quote(source.revision, safe='')}",
            settings,
            what,
        )
    except SourceError as exc:
        if "HTTP 401" in str(exc) or "HTTP 403" in str(exc):
            raise SourceError(f"{what} is gated or private: it needs the user's own access") from exc
        if "HTTP 404" in str(exc):
            raise SourceError(f"{what}: no such dataset repo or revision") from exc
        raise
    commit = info.get("sha")
    if not isinstance(commit, str) or not commit:
        raise SourceError(f"{what}: the Hub did not say which commit the revision is")
    url: str | None = f"{hub}/api/datasets/{source.repo}/tree/{commit}?recursive=true"
    remote_files = []
    while url:
        entries, response = fetch_json(client, url, settings, what)
        for entry in entries:
            path = entry.get("path", "")
            if entry.get("type") != "file" or path == ".gitattributes":
                continue
            if not included(path, source.include):
                continue
            lfs = entry.get("lfs") or {}
            remote_files.append(
                RemoteFile(
                    name=path,
                    url=f"{hub}/datasets/{source.repo}/resolve/{commit}/{quote(path)}",
                    size=entry.get("size"),
                    sha256=lfs.get("oid") if lfs else None,
                    git_sha1=None if lfs else entry.get("oid"),
                )
            )
        url = response.links.get("next", {}).get("url")
    return chosen(remote_files, source.include, what)
