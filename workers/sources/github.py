"""`github` sources: the assets of a GitHub release, or without a release the repository's own files at one commit.

Which files:

- with `tag`: that release's assets, from `GET {api}/repos/{repo}/releases/tags/{tag}`;
- without: the latest release's assets (`GET {api}/repos/{repo}/releases/latest`: the newest release that is
  neither a draft nor a pre-release); when the repository has no release (404), or its latest release has no
  assets, the repository's files at its default branch.

Release assets: GitHub states each asset's `digest` (`sha256:...`) for assets uploaded since mid-2025; an older
asset has none, so it cannot be verified and is refused with the reason (give its sha256 in an `http` source).

Repository files: `GET {api}/repos/{repo}` names the default branch, `GET {api}/repos/{repo}/commits/{branch}`
pins it to one commit (and its tree), `GET {api}/repos/{repo}/git/trees/{tree}?recursive=1` lists every blob
with its git blob id and size. Each blob is a RemoteFile fetched from `{raw}/{repo}/{commit}/{path}` and
verified by its blob id, so every file comes from that commit: the commit's sha is in every file's URL, logged
when resolved, and named in every error (`GitHub repo owner/name@<commit>`). A listing GitHub truncated (it
stops at 100,000 entries or 7 MB) is an error, not a partial download. Symbolic links (mode 120000) and
submodules are left out. Git LFS: the raw host serves a file kept in LFS as its pointer (a small text file,
which its blob id verifies), so the files that the commit's `.gitattributes` put under `filter=lfs` and that
are small enough to be pointers (under 200 bytes) are read when resolving, and pointers fail the source, named
(leave them out with `include`), instead of arriving as fake images.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from fnmatch import fnmatch
from posixpath import basename, dirname
from typing import Any
from urllib.parse import quote

import httpx

from app.common.descriptors import GitHubReleaseSource
from app.core.config import Settings
from workers.safety import UnsafeSourceError
from workers.sources.base import NO_OPTIONS, FetchOptions, RemoteFile, SourceError, chosen, included
from workers.sources.net import HttpStatusError, fetch_json, open_response

log = logging.getLogger(__name__)

LFS_POINTER_MAX = 200  # bytes: a pointer file is about 130 (version, oid sha256:<64 hex>, size lines)
LFS_POINTER_HEADER = b"version https://git-lfs.github.com/spec/"
_SYMLINK_MODE = "120000"


def resolve(
    source: GitHubReleaseSource, settings: Settings, client: httpx.Client, options: FetchOptions = NO_OPTIONS
) -> list[RemoteFile]:
    api = f"{settings.github_api_url.rstrip('/')}/repos/{source.repo}"
    if source.tag is not None:
        what = f"GitHub release {source.repo}@{source.tag}"
        release, _ = fetch_json(client, f"{api}/releases/tags/{quote(source.tag, safe='')}", settings, what)
        assets = release.get("assets") if isinstance(release, dict) else None
        if not assets:
            raise SourceError(
                f"{what} has no assets (its source code archives are not assets; use an `http` source)"
            )
        return _release_assets(assets, source, what)
    try:
        release, _ = fetch_json(client, f"{api}/releases/latest", settings, f"GitHub repo {source.repo}")
    except HttpStatusError as exc:
        if exc.status != 404:
            raise
        release = None
    assets = release.get("assets") if isinstance(release, dict) else None
    if assets:
        tag = release.get("tag_name") if isinstance(release, dict) else None
        return _release_assets(assets, source, f"GitHub release {source.repo}@{tag or 'latest'}")
    return repository_files(source, settings, client)


def _release_assets(assets: list[dict[str, Any]], source: GitHubReleaseSource, what: str) -> list[RemoteFile]:
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


def repository_files(
    source: GitHubReleaseSource, settings: Settings, client: httpx.Client
) -> list[RemoteFile]:
    """The repository's files at its default branch's current commit (module docstring)."""
    api = f"{settings.github_api_url.rstrip('/')}/repos/{source.repo}"
    repository, _ = fetch_json(client, api, settings, f"GitHub repo {source.repo}")
    branch = repository.get("default_branch") if isinstance(repository, dict) else None
    if not isinstance(branch, str) or not branch:
        raise SourceError(f"GitHub repo {source.repo}: the API names no default branch")
    commit, _ = fetch_json(
        client, f"{api}/commits/{quote(branch, safe='/')}", settings, f"GitHub repo {source.repo}@{branch}"
    )
    sha = commit.get("sha") if isinstance(commit, dict) else None
    tree = ((commit.get("commit") or {}).get("tree") or {}).get("sha") if isinstance(commit, dict) else None
    if not isinstance(sha, str) or not isinstance(tree, str):
        raise SourceError(f"GitHub repo {source.repo}@{branch}: the API did not say which commit it is")
    what = f"GitHub repo {source.repo}@{sha} ({branch})"
    listing, _ = fetch_json(client, f"{api}/git/trees/{tree}?recursive=1", settings, what)
    if not isinstance(listing, dict) or not isinstance(listing.get("tree"), list):
        raise SourceError(f"{what}: the tree listing is not a list of entries")
    if listing.get("truncated"):
        raise SourceError(
            f"{what}: GitHub truncated the file listing (over 100,000 entries or 7 MB), so the repository's "
            f"files cannot all be listed; fetching part of them would pass for the whole (use a release or an "
            "`http` source)"
        )
    raw = f"{settings.github_raw_url.rstrip('/')}/{source.repo}/{sha}"
    blobs: dict[str, RemoteFile] = {}
    for entry in listing["tree"]:
        path = entry.get("path")
        if entry.get("type") != "blob" or entry.get("mode") == _SYMLINK_MODE or not isinstance(path, str):
            continue
        blobs[path] = RemoteFile(
            name=path, url=f"{raw}/{quote(path)}", size=entry.get("size"), git_sha1=entry.get("sha")
        )
    log.info("%s: %d files at commit %s of %s", what, len(blobs), sha, branch)
    wanted = [remote for path, remote in blobs.items() if included(path, source.include)]
    pointers = _lfs_pointers(wanted, blobs, settings, client, what)
    if pointers:
        raise SourceError(
            f"{what}: {len(pointers)} files are Git LFS pointers (their content is in Git LFS, which a `github` "
            f"source does not fetch): {', '.join(pointers[:10])}{' ...' if len(pointers) > 10 else ''}; leave "
            "them out with `include`"
        )
    return chosen(wanted, source.include, what)


@dataclass(frozen=True)
class _LfsRule:
    """One `filter=lfs` line of a `.gitattributes` in `folder`: a pattern without a slash matches a file name at
    any depth below the folder, one with a slash the path relative to it. fnmatch's `*` also crosses `/`: a
    wider match only makes a file a candidate, which its content then confirms or not."""

    folder: str
    pattern: str

    def matches(self, path: str) -> bool:
        if self.folder and not path.startswith(self.folder + "/"):
            return False
        relative = path[len(self.folder) + 1 :] if self.folder else path
        if "/" not in self.pattern:
            return fnmatch(basename(relative), self.pattern)
        return fnmatch(relative, self.pattern)


def _lfs_rules(
    blobs: dict[str, RemoteFile], settings: Settings, client: httpx.Client, what: str
) -> list[_LfsRule]:
    rules = []
    for path, remote in blobs.items():
        if basename(path) != ".gitattributes":
            continue
        text = _small_file(remote, settings, client, what, limit=1024 * 1024).decode("utf-8", "replace")
        for line in text.splitlines():
            fields = line.split()
            if len(fields) < 2 or fields[0].startswith("#") or "filter=lfs" not in fields[1:]:
                continue
            pattern = fields[0].strip("/")
            if pattern:
                rules.append(_LfsRule(dirname(path), pattern))
    return rules


def _lfs_pointers(
    wanted: list[RemoteFile],
    blobs: dict[str, RemoteFile],
    settings: Settings,
    client: httpx.Client,
    what: str,
) -> list[str]:
    """The names of the wanted files that are LFS pointers: only files an LFS rule covers and small enough to
    be a pointer are read."""
    rules = _lfs_rules(blobs, settings, client, what)
    if not rules:
        return []
    pointers = []
    for remote in wanted:
        if remote.size is None or remote.size >= LFS_POINTER_MAX:
            continue
        if not any(rule.matches(remote.name) for rule in rules):
            continue
        if _small_file(remote, settings, client, what, limit=LFS_POINTER_MAX).startswith(LFS_POINTER_HEADER):
            pointers.append(remote.name)
    return sorted(pointers)


def _small_file(remote: RemoteFile, settings: Settings, client: httpx.Client, what: str, limit: int) -> bytes:
    """The content of a small blob, read while resolving (not cached: the downloader fetches it again)."""
    assert remote.url is not None
    try:
        response, final_url = open_response(client, remote.url, settings)
        with contextlib.closing(response):
            if response.status_code != 200:
                raise SourceError(f"{what}: GET {final_url} answered HTTP {response.status_code}")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > limit:
                    raise SourceError(f"{what}: {remote.name} is larger than {limit} bytes")
    except UnsafeSourceError as exc:
        raise SourceError(f"{what}: {exc}") from exc
    except httpx.HTTPError as exc:
        raise SourceError(f"{what}: GET {remote.url} failed: {exc}") from exc
    return bytes(body)
