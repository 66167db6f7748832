"""`github` sources: the assets of one GitHub release, from `GET {api}/repos/{repo}/releases/tags/{tag}`.

GitHub states each asset's `digest` (`sha256:...`) for assets uploaded since mid-2025; an older asset has none,
so it cannot be verified and is refused with the reason (give its sha256 in an `http` source instead).
"""

from __future__ import annotations

from urllib.parse import quote

import httpx

from app.core.config import Settings
from workers.sources.base import NO_OPTIONS, FetchOptions, RemoteFile, SourceError, chosen, included
from workers.sources.descriptors import GitHubReleaseSource
from workers.sources.net import fetch_json


def resolve(
    source: GitHubReleaseSource, settings: Settings, client: httpx.Client, options: FetchOptions = NO_OPTIONS
) -> list[RemoteFile]:
    what = f"GitHub release {source.repo}@{source.tag}"
    url = f"{settings.github_api_url.rstrip('/')}/repos/{source.repo}/releases/tags/{quote(source.tag, safe='')}"
    release, _ = fetch_json(client, url, settings, what)
    assets = release.get("assets") if isinstance(release, dict) else None
    if not assets:
        raise SourceError(
            f"{what} has no assets (its source code archives are not assets; use an `http` source)"
        )
    remote_files = []
    for asset in assets:
        name, download = asset.get("name"), asset.get("browser_download_url")
        if not name or not download:
            raise SourceError(f"{what}: an asset has no name or browser_download_url: {asset}")
        if not included(name, source.include):
            continue
        algorithm, _, digest = str(asset.get("digest") or "").partition(":")
        if algorithm != "sha256" or not digest:
            raise SourceError(
                f"{what}: asset {name} states no sha256 digest (uploaded before GitHub recorded them); "
                "give it as an `http` source with its sha256"
            )
        remote_files.append(
            RemoteFile(name=name, url=download, size=asset.get("size"), sha256=digest.lower())
        )
    return chosen(remote_files, source.include, what)
