"""`physionet` sources: the files of one PhysioNet project version, listed with their sha256 by the version's
`SHA256SUMS.txt`.

What this relies on (PhysioNet's published file layout, which `wget -r` users and clients such as SleepECG read):

- A version's files are served under `{physionet_url}/files/<project>/<version>/<path>`, and each published
  version has `SHA256SUMS.txt` there: one line per file, `<sha256> <path>` (sha256sum's format), which gives
  both the file list and every file's checksum.
- Open projects need no account. A credentialed project answers an anonymous request with 401 or 403; then the
  operator's account (IMAGINGX_PHYSIONET_USERNAME and IMAGINGX_PHYSIONET_PASSWORD) is sent with HTTP basic auth,
  as `wget --user` does, to PhysioNet's origin only, for the listing and every file. The account must be
  credentialed and have signed the project's data use agreement.
"""

from __future__ import annotations

import re
from urllib.parse import quote

import httpx

from app.common.descriptors import PhysioNetSource
from app.core.config import Settings
from workers.safety import UnsafeSourceError
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
from workers.sources.net import open_response

SETTINGS = "IMAGINGX_PHYSIONET_USERNAME and IMAGINGX_PHYSIONET_PASSWORD"
CHECKSUMS = "SHA256SUMS.txt"
MAX_LIST_BYTES = 256 * 2**20  # the largest projects (MIMIC-CXR) list a few hundred thousand files in ~40 MB
_LINE = re.compile(r"^(?P<sha256>[0-9a-fA-F]{64}) [ *]?(?P<path>.+)$")


def credential(settings: Settings) -> Credential:
    """The operator's PhysioNet account, bound to PhysioNet's origin; CredentialsMissingError when unset."""
    password = settings.physionet_password.get_secret_value() if settings.physionet_password else ""
    if not settings.physionet_username or not password:
        raise CredentialsMissingError(
            f"this PhysioNet project is credentialed: set {SETTINGS} to a PhysioNet account (physionet.org) that "
            "is credentialed and has signed the project's data use agreement",
            SETTINGS,
        )
    return Credential.basic(settings.physionet_url, settings.physionet_username, password)


def resolve(
    source: PhysioNetSource, settings: Settings, client: httpx.Client, options: FetchOptions = NO_OPTIONS
) -> list[RemoteFile]:
    what = f"PhysioNet {source.project} {source.version}"
    base = f"{settings.physionet_url.rstrip('/')}/files/{quote(source.project)}/{quote(source.version)}"
    status, text = _get_text(client, f"{base}/{CHECKSUMS}", settings, None, what)
    account = None
    if status in (401, 403):
        account = credential(settings)
        status, text = _get_text(client, f"{base}/{CHECKSUMS}", settings, account, what)
        if status in (401, 403):
            raise SourceError(
                f"{what}: PhysioNet refused the account (HTTP {status}): it must be credentialed and have "
                f"signed the data use agreement of {source.project}"
            )
    if status == 404:
        raise SourceError(f"{what}: no such project version, or it publishes no {CHECKSUMS}")
    if status != 200:
        raise SourceError(f"{what}: GET {base}/{CHECKSUMS} answered HTTP {status}")
    remote_files = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = _LINE.match(line.rstrip("\r"))
        if match is None:
            raise SourceError(
                f"{what}: line {number} of {CHECKSUMS} is not `<sha256> <path>`: {line[:200]!r}"
            )
        path = match["path"].removeprefix("./")
        if included(path, source.include):
            remote_files.append(
                RemoteFile(
                    name=path,
                    url=f"{base}/{quote(path)}",
                    sha256=match["sha256"].lower(),
                    credential=account,
                )
            )
    return chosen(remote_files, source.include, what)


def _get_text(
    client: httpx.Client, url: str, settings: Settings, account: Credential | None, what: str
) -> tuple[int, str]:
    """(status, body) of a GET; the body is read only for a 200, up to MAX_LIST_BYTES."""
    try:
        response, final_url = open_response(client, url, settings, credential=account)
        try:
            if response.status_code != 200:
                return response.status_code, ""
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_LIST_BYTES:
                    raise SourceError(f"{what}: {final_url} is larger than {MAX_LIST_BYTES:,} bytes")
        finally:
            response.close()
    except UnsafeSourceError as exc:
        raise SourceError(f"{what}: {exc}") from exc
    except httpx.HTTPError as exc:
        raise SourceError(f"{what}: GET {url} failed: {exc}") from exc
    try:
        return 200, body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError(f"{what}: {final_url} is not UTF-8 text") from exc
