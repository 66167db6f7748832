"""`synapse` sources: a Synapse file, or every file under a project or folder, with the operator's token.

What this relies on (the Synapse REST API reference, and the calls synapseclient makes):

- Every call carries `Authorization: Bearer <personal access token>` (synapse.org > Account Settings > Personal
  Access Tokens, with view and download scope).
- `GET {api}/repo/v1/entity/<id>`: `concreteType` says file (`...FileEntity`), folder or project; a file has
  `versionNumber`.
- `POST {api}/repo/v1/entity/children` with `{"parentId", "includeTypes": ["folder", "file"],
  "nextPageToken"?}` answers `{"page": [{id, name, type, versionNumber}], "nextPageToken"?}`: folders are
  walked, page by page.
- `GET {api}/repo/v1/entity/<id>/version/<v>/filehandles` answers `{"list": [FileHandle]}`; the data file's
  handle (not its preview) has `id`, `contentSize` and `contentMd5`, which verifies the download. Files are
  named by their path of entity names, as synapse.org shows them (what `include` globs match, before any
  handle is asked for).
- A file is downloaded from `GET {api}/file/v1/file/<handle>?fileAssociateType=FileEntity&fileAssociateId=<id>`,
  which answers a redirect to a presigned storage URL: the token goes to the API's origin only, never there.
- Controlled-access data needs its terms accepted on synapse.org by the same account; until then the download
  answers HTTP 403.
"""

from __future__ import annotations

from typing import Any

import httpx

from app.common.descriptors import SynapseSource
from app.core.config import Settings
from workers.sources.base import (
    NO_OPTIONS,
    Credential,
    CredentialsMissingError,
    FetchOptions,
    RemoteFile,
    SourceError,
    chosen,
    included,
)
from workers.sources.net import HttpStatusError, request_json

SETTINGS = "IMAGINGX_SYNAPSE_TOKEN"
FILE, FOLDER, PROJECT = (
    "org.sagebionetworks.repo.model.FileEntity",
    "org.sagebionetworks.repo.model.Folder",
    "org.sagebionetworks.repo.model.Project",
)
PREVIEW = "org.sagebionetworks.repo.model.file.PreviewFileHandle"
MAX_PAGES = 100_000  # of children, over all folders: a listing that never ends is an error, not a loop


def credential(settings: Settings) -> Credential:
    """The operator's Synapse token, bound to the API's origin; CredentialsMissingError when unset."""
    token = settings.synapse_token.get_secret_value() if settings.synapse_token else ""
    if not token:
        raise CredentialsMissingError(
            f"Synapse needs the operator's Synapse account: set {SETTINGS} to a personal access token "
            "(synapse.org > Account Settings > Personal Access Tokens, with view and download scope; accept "
            "the dataset's terms on synapse.org with the same account)",
            SETTINGS,
        )
    return Credential.bearer(settings.synapse_api_url, token)


class _Synapse:
    def __init__(self, settings: Settings, client: httpx.Client, account: Credential, what: str) -> None:
        self.settings, self.client, self.account, self.what = settings, client, account, what
        self.api = settings.synapse_api_url.rstrip("/")
        self.pages = 0

    def call(self, path: str, body: Any = None) -> Any:
        try:
            answer, _ = request_json(
                self.client,
                f"{self.api}{path}",
                self.settings,
                self.what,
                json_body=body,
                credential=self.account,
            )
        except HttpStatusError as exc:
            reasons = {
                401: f"Synapse refused the token (HTTP 401): check {SETTINGS}",
                403: "the Synapse account may not read it (HTTP 403)",
                404: "no such Synapse entity (HTTP 404)",
            }
            if exc.status in reasons:
                raise SourceError(f"{self.what}: {reasons[exc.status]}") from exc
            raise
        if not isinstance(answer, dict):
            raise SourceError(f"{self.what}: {path} did not answer a JSON object")
        return answer

    def children(self, parent: str) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        token = None
        while True:
            self.pages += 1
            if self.pages > MAX_PAGES:
                raise SourceError(f"{self.what} lists more than {MAX_PAGES:,} pages of children")
            body: dict[str, Any] = {"parentId": parent, "includeTypes": ["folder", "file"]}
            if token:
                body["nextPageToken"] = token
            answer = self.call("/repo/v1/entity/children", body)
            entries.extend(e for e in answer.get("page") or [] if isinstance(e, dict))
            token = answer.get("nextPageToken")
            if not token:
                return entries

    def file(self, entity: str, version: Any, name: str) -> RemoteFile:
        handles = self.call(f"/repo/v1/entity/{entity}/version/{version}/filehandles").get("list") or []
        data = [h for h in handles if isinstance(h, dict) and h.get("concreteType") != PREVIEW]
        if not data:
            raise SourceError(f"{self.what}: file {entity} has no data file handle")
        handle = data[0]
        if handle.get("id") is None:
            raise SourceError(f"{self.what}: file {entity} has a file handle without id")
        url = f"{self.api}/file/v1/file/{handle['id']}?fileAssociateType=FileEntity&fileAssociateId={entity}"
        md5 = str(handle.get("contentMd5") or "").lower()
        size = handle.get("contentSize")
        if md5:
            return RemoteFile(name=name, url=url, size=size, md5=md5, credential=self.account)
        # an external file handle may state no md5: size only, https only
        return RemoteFile(name=name, url=url, size=size, no_checksum=True, credential=self.account)


def resolve(
    source: SynapseSource, settings: Settings, client: httpx.Client, options: FetchOptions = NO_OPTIONS
) -> list[RemoteFile]:
    what = f"Synapse {source.entity}"
    synapse = _Synapse(settings, client, credential(settings), what)
    entity = synapse.call(f"/repo/v1/entity/{source.entity}")
    kind = entity.get("concreteType")
    if kind == FILE:
        name = str(entity.get("name") or source.entity)
        files = (
            []
            if not included(name, source.include)
            else [synapse.file(source.entity, entity.get("versionNumber", 1), name)]
        )
        return chosen(files, source.include, what)
    if kind not in (FOLDER, PROJECT):
        raise SourceError(f"{what} is a {kind or 'entity of unknown type'}, not a file, folder or project")
    remote_files = []
    pending = [(source.entity, "")]
    while pending:
        parent, folder = pending.pop()
        for child in synapse.children(parent):
            child_id, child_name = child.get("id"), str(child.get("name") or "")
            if not child_id or not child_name:
                raise SourceError(f"{what}: a child of {parent} has no id or name: {child}")
            child_path = f"{folder}/{child_name}" if folder else child_name
            if child.get("type") == FOLDER:
                pending.append((child_id, child_path))
            elif child.get("type") == FILE and included(child_path, source.include):
                remote_files.append(synapse.file(child_id, child.get("versionNumber", 1), child_path))
    return chosen(remote_files, source.include, what)
