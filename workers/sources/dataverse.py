"""`dataverse` sources: the public files of a Dataverse dataset, from the installation's native API, with the
checksum Dataverse records for each file.

What this relies on (the Dataverse API guide: Native API and Data Access API):

- `GET {server}/api/datasets/:persistentId/?persistentId=doi:<doi>` answers `{"status": "OK", "data": {...,
  "latestVersion": {...}}}`: without an account, the latest published version. A given version:
  `GET {server}/api/datasets/:persistentId/versions/<version>?persistentId=doi:<doi>` (`data` is the version).
  A version's `files` are `{label, directoryLabel?, restricted, dataFile: {id, filesize, checksum: {type,
  value}, md5?, originalFileName?, originalFileSize?, originalFileFormat?, embargo?}}`; checksum types are MD5
  (Harvard Dataverse's), SHA-1, SHA-256 and SHA-512.
- A file is downloaded from `GET {server}/api/access/datafile/<id>`. A tabular file that Dataverse ingested is
  served as its generated `.tab` by default, while its recorded checksum is the uploaded original's (Dataverse
  issue 7275; datalad-dataverse fetches the same way): such files are fetched with `?format=original`, under the
  original's name and size.
- Restricted files, and embargoed ones, need access granted on the dataset's page; this server downloads public
  files only, so a source that includes any is refused, naming them (`include` can leave them out).
- The version states its terms: `license` (Dataverse 5.10 and later: `{"name": "CC0 1.0", "uri"}`; older
  versions a string such as "CC0") or, for custom terms, `termsOfUse` (free text, possibly HTML). Kept as
  written (tags dropped, whitespace folded, cut at 200 characters) and carried with every file with the DOI.
"""

from __future__ import annotations

import html
import re
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import quote

import httpx

from app.common.descriptors import DataverseSource
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
from workers.sources.net import HttpStatusError, request_json

CHECKSUM_TYPES: dict[str, ChecksumAlgorithm] = {
    "MD5": "md5",
    "SHA-1": "sha1",
    "SHA-256": "sha256",
    "SHA-512": "sha512",
}


def resolve(
    source: DataverseSource, settings: Settings, client: httpx.Client, options: FetchOptions = NO_OPTIONS
) -> list[RemoteFile]:
    what = f"Dataverse dataset doi:{source.doi} at {source.server}"
    persistent_id = quote(f"doi:{source.doi}", safe=":/")
    if source.version is None:
        url = f"{source.server}/api/datasets/:persistentId/?persistentId={persistent_id}"
    else:
        url = (
            f"{source.server}/api/datasets/:persistentId/versions/{quote(source.version, safe=':.')}"
            f"?persistentId={persistent_id}"
        )
    try:
        answer, _ = request_json(client, url, settings, what)
    except HttpStatusError as exc:
        if exc.status == 404:
            raise SourceError(f"{what}: no such dataset or version, or it is not published") from exc
        if exc.status in (401, 403):
            raise SourceError(f"{what}: the dataset is not public (HTTP {exc.status})") from exc
        raise
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, dict):
        raise SourceError(f"{what}: the API answered no dataset ({_message(answer)})")
    version = data if source.version is not None else data.get("latestVersion")
    if not isinstance(version, dict):
        raise SourceError(f"{what}: the dataset has no published version")
    remote_files, refused = [], []
    for entry in version.get("files") or []:
        name, remote = _remote_file(entry, source.server, what)
        if not included(name, source.include):
            continue
        if remote is None:
            refused.append(name)
        else:
            remote_files.append(remote)
    if refused:
        raise SourceError(
            f"{what}: {len(refused)} file(s) are restricted or embargoed and need access granted on the "
            f"dataset's page, which this server does not have: {', '.join(sorted(refused))}; leave them out with "
            "`include` globs to fetch the public files"
        )
    licence = stated_licence(version)
    remote_files = [
        replace(r, stated_licence=licence, stated_doi=source.doi, stated_by=what) for r in remote_files
    ]
    return chosen(remote_files, source.include, what)


MAX_TERMS = 200
_TAG = re.compile(r"<[^>]*>")


def stated_licence(version: dict[str, Any]) -> str:
    """The licence a dataset version states: `license`'s name (or the string itself), else its custom
    `termsOfUse` as text; "" when it states neither."""
    stated = version.get("license")
    if isinstance(stated, dict):
        text = str(stated.get("name") or stated.get("uri") or "")
    elif isinstance(stated, str) and stated.upper() != "NONE":
        text = stated
    else:
        text = ""
    if not text.strip():
        text = html.unescape(_TAG.sub(" ", str(version.get("termsOfUse") or "")))
    return " ".join(text.split())[:MAX_TERMS]


def _message(answer: Any) -> str:
    return str(answer.get("message") or answer.get("status")) if isinstance(answer, dict) else "not JSON"


def _remote_file(entry: Any, server: str, what: str) -> tuple[str, RemoteFile | None]:
    """The file's path in the dataset and what to fetch; None for a file this server may not download."""
    data_file = entry.get("dataFile") if isinstance(entry, dict) else None
    if not isinstance(data_file, dict) or data_file.get("id") is None:
        raise SourceError(f"{what}: a file entry has no dataFile id: {entry}")
    ingested = bool(data_file.get("originalFileFormat"))
    label = (data_file.get("originalFileName") if ingested else None) or entry.get("label")
    label = label or data_file.get("filename")
    if not label:
        raise SourceError(f"{what}: file {data_file['id']} has no name")
    folder = str(entry.get("directoryLabel") or "").strip("/")
    name = f"{folder}/{label}" if folder else str(label)
    if entry.get("restricted") or data_file.get("restricted") or _embargoed(data_file):
        return name, None
    url = f"{server}/api/access/datafile/{data_file['id']}" + ("?format=original" if ingested else "")
    size = data_file.get("originalFileSize") if ingested else data_file.get("filesize")
    stated = data_file.get("checksum") or {}
    algorithm = CHECKSUM_TYPES.get(str(stated.get("type") or "").upper())
    digest = str(stated.get("value") or "").lower()
    if not (algorithm and digest) and data_file.get("md5"):
        algorithm, digest = "md5", str(data_file["md5"]).lower()
    if algorithm and digest:
        return name, RemoteFile(name=name, url=url, size=size, **checksum(algorithm, digest))
    # no checksum recorded (a harvested file, an unknown algorithm): size only, over https
    return name, RemoteFile(name=name, url=url, size=size, no_checksum=True)


def _embargoed(data_file: dict[str, Any]) -> bool:
    available = (data_file.get("embargo") or {}).get("dateAvailable")
    if not available:
        return False
    try:
        return date.fromisoformat(str(available)[:10]) > datetime.now(UTC).date()
    except ValueError:
        return True  # an embargo we cannot read is not known to be over
