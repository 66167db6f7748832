"""`http` sources: a plain list of files, each with its checksum."""

from __future__ import annotations

import httpx

from app.common.descriptors import HttpSource
from app.core.config import Settings
from workers.sources.base import NO_OPTIONS, FetchOptions, RemoteFile


def resolve(
    source: HttpSource, settings: Settings, client: httpx.Client, options: FetchOptions = NO_OPTIONS
) -> list[RemoteFile]:
    return [
        RemoteFile(
            name=file.file_name,
            url=file.url,
            size=file.size,
            sha256=file.sha256.lower() if file.sha256 else None,
            md5=file.md5.lower() if file.md5 else None,
        )
        for file in source.files
    ]
