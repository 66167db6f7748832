"""`openneuro` sources: the files of one OpenNeuro snapshot, listed with OpenNeuro's GraphQL API.

What this relies on (read in OpenNeuro's server code, OpenNeuroOrg/openneuro, and in openneuro-py):

- `POST {openneuro_url}/crn/graphql`, `snapshot(datasetId, tag) { files(recursive: true) { id filename size
  directory annexed urls } }`, lists every file of the snapshot under its full path (the server walks the git
  trees). A server without the `recursive` argument answers the top level only; there each directory entry's
  `id` is its git tree, listed with `files(tree: <id>)`, which is how openneuro-py walks a dataset. Directory
  entries left in any answer are walked that way, so both kinds of server give the whole snapshot.
- Without a version, `dataset(id) { latestSnapshot { tag } }` names the newest snapshot, which is then pinned.
- A file's `id` is what OpenNeuro's worker reads from the git tree: for an annexed file its git-annex key,
  `SHA256E-s<size>--<sha256><ext>` (`MD5E-...` in older datasets), which carries the content's checksum; for a
  file kept in git its git blob id (40 hex digits), verified as a blob. The key's size must equal the listed
  size. OpenNeuro publishes no other per-file checksum (no md5/sha256 field). A file whose id is neither (a key
  of another backend, or a server from before April 2026 whose ids were opaque hashes of key and path, seen as
  an annexed file whose id is no key) is taken without a checksum: https only, size checked (base.RemoteFile).
- `urls[0]` is where the file is downloaded: a public S3 object version for exported files, else OpenNeuro's
  own `/crn/datasets/<id>/objects/<key>` endpoint. Public datasets need no account.

The BIDS layout is recognised later by the pipeline.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from app.common.descriptors import OpenNeuroSource
from app.core.config import Settings
from workers.sources.base import (
    NO_OPTIONS,
    ChecksumAlgorithm,
    FetchOptions,
    RemoteFile,
    SourceError,
    checksum,
    chosen,
    included,
)
from workers.sources.net import request_json

FILE_FIELDS = "id filename size directory annexed urls"
LATEST_QUERY = "query ($dataset: ID!) { dataset(id: $dataset) { latestSnapshot { tag } } }"
RECURSIVE_QUERY = (
    "query ($dataset: ID!, $tag: String!) { snapshot(datasetId: $dataset, tag: $tag) "
    f"{{ id tag files(recursive: true) {{ {FILE_FIELDS} }} }} }}"
)
TREE_QUERY = (
    "query ($dataset: ID!, $tag: String!, $tree: String) { snapshot(datasetId: $dataset, tag: $tag) "
    f"{{ id tag files(tree: $tree) {{ {FILE_FIELDS} }} }} }}"
)
MAX_TREE_QUERIES = 20_000  # one per directory; beyond that a listing that never ends is an error, not a loop

# a git-annex key: BACKEND-sSIZE[-field...]--NAME, NAME starting with the hash for the hashing backends
_ANNEX_KEY = re.compile(r"^(?P<backend>[A-Z0-9]+)-s(?P<size>\d+)(?:-[^-]+)*?--(?P<name>.+)$")
_KEY_HASHES: dict[str, tuple[ChecksumAlgorithm, int]] = {
    "SHA256": ("sha256", 64),
    "SHA512": ("sha512", 128),
    "SHA1": ("sha1", 40),
    "MD5": ("md5", 32),
}
_HEX = re.compile(r"^[0-9a-f]+$")
_GIT_BLOB = re.compile(r"^[0-9a-f]{40}$")


class _GraphQLError(SourceError):
    def __init__(self, messages: list[str]) -> None:
        super().__init__("; ".join(messages))
        self.messages = messages


def resolve(
    source: OpenNeuroSource, settings: Settings, client: httpx.Client, options: FetchOptions = NO_OPTIONS
) -> list[RemoteFile]:
    endpoint = f"{settings.openneuro_url.rstrip('/')}/crn/graphql"
    what = f"OpenNeuro {source.dataset}"
    tag = source.version or _latest_tag(client, endpoint, settings, source.dataset, what)
    what = f"OpenNeuro {source.dataset} snapshot {tag}"
    entries = _snapshot_files(client, endpoint, settings, source.dataset, tag, what)
    opaque_ids = any(e.get("annexed") and _annex_checksum(str(e.get("id") or "")) is None for e in entries)
    remote_files = []
    for entry in entries:
        name = entry["filename"]
        # the BIDS description states the licence, authors and DOI: fetched even when `include` leaves it out
        # (a few hundred bytes), since the bundle carries them with the source
        if included(name, source.include) or (name == BIDS_DESCRIPTION and _any_included(entries, source)):
            remote_files.append(_remote_file(entry, name, opaque_ids, what))
    return chosen(remote_files, source.include, what)


BIDS_DESCRIPTION = "dataset_description.json"


def _any_included(entries: list[dict[str, Any]], source: OpenNeuroSource) -> bool:
    return any(e["filename"] != BIDS_DESCRIPTION and included(e["filename"], source.include) for e in entries)


def _latest_tag(client: httpx.Client, endpoint: str, settings: Settings, dataset: str, what: str) -> str:
    data = _graphql(client, endpoint, settings, LATEST_QUERY, {"dataset": dataset}, what)
    tag = ((data.get("dataset") or {}).get("latestSnapshot") or {}).get("tag")
    if not isinstance(tag, str) or not tag:
        raise SourceError(f"{what}: no such dataset, or it has no published snapshot")
    return tag


def _snapshot_files(
    client: httpx.Client, endpoint: str, settings: Settings, dataset: str, tag: str, what: str
) -> list[dict[str, Any]]:
    """Every file entry of the snapshot, `filename` made its full path."""
    variables = {"dataset": dataset, "tag": tag}
    try:
        top = _files(_graphql(client, endpoint, settings, RECURSIVE_QUERY, variables, what), what)
    except _GraphQLError as exc:
        if not any("recursive" in message for message in exc.messages):
            raise
        # a server that predates `files(recursive: true)`: walk the trees from the top
        top = _files(_graphql(client, endpoint, settings, TREE_QUERY, variables | {"tree": None}, what), what)
    files: list[dict[str, Any]] = []
    pending = [("", entry) for entry in top]
    # git stores identical folders once (one tree id under several names): each is asked for once
    trees: dict[str, list[dict[str, Any]]] = {}
    while pending:
        prefix, entry = pending.pop()
        filename = entry.get("filename")
        if not isinstance(filename, str) or not filename:
            raise SourceError(f"{what}: a file entry has no filename: {entry}")
        path = f"{prefix}/{filename}" if prefix else filename
        if not entry.get("directory"):
            files.append(entry | {"filename": path})
            continue
        tree = str(entry.get("id") or "")
        if not tree:
            raise SourceError(f"{what}: directory {path} has no tree id")
        if tree not in trees:
            if len(trees) >= MAX_TREE_QUERIES:
                raise SourceError(f"{what} has more than {MAX_TREE_QUERIES:,} directories")
            data = _graphql(client, endpoint, settings, TREE_QUERY, variables | {"tree": tree}, what)
            trees[tree] = _files(data, what)
        pending.extend((path, child) for child in trees[tree])
    return files


def _files(data: dict[str, Any], what: str) -> list[dict[str, Any]]:
    snapshot = data.get("snapshot")
    if not isinstance(snapshot, dict):
        raise SourceError(f"{what}: no such snapshot")
    files = snapshot.get("files")
    if not isinstance(files, list):
        raise SourceError(f"{what}: the snapshot lists no files")
    return [entry for entry in files if isinstance(entry, dict)]


def _graphql(
    client: httpx.Client, endpoint: str, settings: Settings, query: str, variables: dict[str, Any], what: str
) -> dict[str, Any]:
    # a query the server rejects (an argument it does not know) is answered 400 with the GraphQL errors
    answer, _ = request_json(
        client,
        endpoint,
        settings,
        what,
        json_body={"query": query, "variables": variables},
        ok_statuses=(200, 400),
    )
    if not isinstance(answer, dict):
        raise SourceError(f"{what}: the GraphQL answer is not an object")
    errors = answer.get("errors")
    if errors:
        messages = [str(e.get("message") if isinstance(e, dict) else e) for e in errors]
        raise _GraphQLError([f"{what}: {message}" for message in messages])
    data = answer.get("data")
    if not isinstance(data, dict):
        raise SourceError(f"{what}: the GraphQL answer has no data")
    return data


def _annex_checksum(file_id: str) -> tuple[ChecksumAlgorithm, str, int] | None:
    """(algorithm, digest, size) carried by a git-annex key; None for anything else."""
    match = _ANNEX_KEY.match(file_id)
    if match is None:
        return None
    known = _KEY_HASHES.get(match["backend"].removesuffix("E"))
    if known is None:
        return None
    algorithm, length = known
    digest = match["name"][:length].lower()
    if len(digest) != length or not _HEX.match(digest):
        return None
    return algorithm, digest, int(match["size"])


def _remote_file(entry: dict[str, Any], name: str, opaque_ids: bool, what: str) -> RemoteFile:
    urls = [
        u for u in entry.get("urls") or [] if isinstance(u, str) and u.startswith(("https://", "http://"))
    ]
    if not urls:
        raise SourceError(f"{what}: file {name} has no download URL")
    size = entry.get("size")
    size = int(size) if size is not None else None
    file_id = str(entry.get("id") or "")
    from_key = _annex_checksum(file_id)
    if from_key is not None:
        algorithm, digest, key_size = from_key
        if size is not None and size != key_size:
            raise SourceError(
                f"{what}: file {name} is listed with {size} bytes, its annex key says {key_size}"
            )
        return RemoteFile(name=name, url=urls[0], size=key_size, **checksum(algorithm, digest))
    if _GIT_BLOB.match(file_id) and not entry.get("annexed") and not opaque_ids:
        return RemoteFile(name=name, url=urls[0], size=size, git_sha1=file_id)
    return RemoteFile(name=name, url=urls[0], size=size, no_checksum=True)
