"""`kaggle` sources: the data of a Kaggle dataset or competition, with the operator's Kaggle account.

What this relies on: Kaggle's public REST API as the official `kaggle` client called it (its generated
`kaggle_api.py` up to version 1.6; `https://www.kaggle.com/api/v1`, HTTP basic auth with the user name and API
key of a token made at kaggle.com > Settings > API):

- The data is one zip archive: `GET {api}/datasets/download/<owner>/<name>[?datasetVersionNumber=<V>]` or
  `GET {api}/competitions/data/download-all/<name>`, each answering a redirect to a signed storage URL on
  another host. The account's credential goes to the API's origin only, never to that storage host
  (base.Credential, net.open_response). The pipeline unpacks the archive.
- Before anything is downloaded, that URL is asked once without following its redirect: a redirect means the
  account may download it; 401 a refused key, 403 a dataset the account may not read or a competition whose
  rules it has not accepted on kaggle.com, 404 no such dataset or competition. So a job fails early, with the
  reason, instead of on the download.
- Kaggle publishes neither a checksum nor the size of the archive: the file is taken as `no_checksum` (https
  only, cached under the sha256 computed while it arrives, not downloaded again while the storage host names the
  same ETag; download.py), and reports say it was verified by size only.
"""

from __future__ import annotations

from urllib.parse import quote

import httpx

from app.common.descriptors import KaggleSource
from app.core.config import Settings
from workers.safety import UnsafeSourceError
from workers.sources.base import (
    NO_OPTIONS,
    Credential,
    CredentialsMissingError,
    FetchOptions,
    RemoteFile,
    SourceError,
)
from workers.sources.net import open_response

SETTINGS = "IMAGINGX_KAGGLE_USERNAME and IMAGINGX_KAGGLE_KEY"


def credential(settings: Settings) -> Credential:
    """The operator's Kaggle account, bound to the API's origin; CredentialsMissingError when unset."""
    key = settings.kaggle_key.get_secret_value() if settings.kaggle_key else ""
    if not settings.kaggle_username or not key:
        raise CredentialsMissingError(
            f"Kaggle needs the operator's Kaggle account: set {SETTINGS} from an API token (kaggle.com > "
            "Settings > API > Create New Token; its kaggle.json holds `username` and `key`)",
            SETTINGS,
        )
    return Credential.basic(settings.kaggle_api_url, settings.kaggle_username, key)


def resolve(
    source: KaggleSource, settings: Settings, client: httpx.Client, options: FetchOptions = NO_OPTIONS
) -> list[RemoteFile]:
    account = credential(settings)
    api = settings.kaggle_api_url.rstrip("/")
    if source.dataset is not None:
        owner, name = source.dataset.split("/", 1)
        what = f"Kaggle dataset {source.dataset}" + (f" version {source.version}" if source.version else "")
        url = f"{api}/datasets/download/{quote(owner)}/{quote(name)}"
        if source.version is not None:
            url += f"?datasetVersionNumber={source.version}"
        archive = f"{name}.zip"
    else:
        assert source.competition is not None
        name = source.competition
        what = f"Kaggle competition {name}"
        url = f"{api}/competitions/data/download-all/{quote(name)}"
        archive = f"{name}.zip"
    _check_access(client, url, settings, account, what)
    return [RemoteFile(name=archive, url=url, no_checksum=True, credential=account)]


def _check_access(client: httpx.Client, url: str, settings: Settings, account: Credential, what: str) -> None:
    try:
        response, _ = open_response(client, url, settings, credential=account, follow_redirects=False)
        response.close()
    except UnsafeSourceError as exc:
        raise SourceError(f"{what}: {exc}") from exc
    except httpx.HTTPError as exc:
        raise SourceError(f"{what}: GET {url} failed: {exc}") from exc
    status = response.status_code
    if response.is_redirect or status == 200:
        return
    if status == 401:
        raise SourceError(f"{what}: Kaggle refused the account (HTTP 401): check {SETTINGS}")
    if status == 403:
        raise SourceError(
            f"{what}: the Kaggle account may not download it (HTTP 403); for a competition, accept its rules "
            "on kaggle.com with that account"
        )
    if status == 404:
        raise SourceError(f"{what}: no such dataset or competition on Kaggle (HTTP 404)")
    raise SourceError(f"{what}: GET {url} answered HTTP {status}")
