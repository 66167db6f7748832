"""Source adapters: one module per kind of host, each turning a descriptor into the list of files to fetch.

A new host (TCIA, OpenNeuro) is one module with
`resolve(source, settings, client, options) -> list[RemoteFile]`, its descriptor model in `descriptors.py`, and one
entry in ADAPTERS. The downloader (`download.py`) then fetches, verifies and caches whatever was resolved.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from app.common.descriptors import SourceDescriptor, parse_source
from app.core.config import Settings
from workers.sources import (
    dataverse,
    doi,
    figshare,
    github,
    http,
    huggingface,
    idc,
    kaggle,
    local,
    openneuro,
    physionet,
    synapse,
    tcia,
    zenodo,
)
from workers.sources.base import NO_OPTIONS, FetchOptions, RemoteFile, SourceError
from workers.sources.download import ChecksumMismatchError, Downloader, SizeMismatchError
from workers.sources.net import new_client


@contextmanager
def _client(client: httpx.Client | None) -> Iterator[httpx.Client]:
    if client is not None:
        yield client
        return
    with new_client() as owned:
        yield owned


ADAPTERS: dict[str, Callable[[Any, Settings, httpx.Client, FetchOptions], list[RemoteFile]]] = {
    "http": http.resolve,
    "zenodo": zenodo.resolve,
    "huggingface": huggingface.resolve,
    "figshare": figshare.resolve,
    "github": github.resolve,
    "local": local.resolve,
    "openneuro": openneuro.resolve,
    "doi": doi.resolve,
    "dataverse": dataverse.resolve,
    "kaggle": kaggle.resolve,
    "synapse": synapse.resolve,
    "physionet": physionet.resolve,
    "tcia": tcia.resolve,
    "idc": idc.resolve,
}


def resolve_source(
    descriptor: Any,
    settings: Settings,
    client: httpx.Client | None = None,
    options: FetchOptions = NO_OPTIONS,
) -> list[RemoteFile]:
    """The files of a source descriptor (a dict, JSON text or parsed model); `options` may narrow what an
    adapter that can sample (subjects, labelled series) takes."""
    source = descriptor if hasattr(descriptor, "kind") else parse_source(descriptor)
    with _client(client) as active:
        return ADAPTERS[source.kind](source, settings, active, options)


def fetch_source(descriptor: Any, destination: Path, settings: Settings) -> list[Path]:
    """Resolve a descriptor and place all its files under `destination` (verified, through the cache)."""
    with new_client() as client:
        remotes = resolve_source(descriptor, settings, client)
        return Downloader(settings, client=client).fetch_into(remotes, destination)


__all__ = [
    "ADAPTERS",
    "ChecksumMismatchError",
    "Downloader",
    "FetchOptions",
    "RemoteFile",
    "SizeMismatchError",
    "SourceDescriptor",
    "SourceError",
    "fetch_source",
    "parse_source",
    "resolve_source",
]
