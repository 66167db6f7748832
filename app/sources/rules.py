"""How a catalog dataset is fetched, decided from what the catalog knows: its landing-page URLs, name and DOIs.

`resolve_dataset` tries the rules in order and returns the first `Resolution`:

1. NCI Imaging Data Commons (most TCIA collections): the dataset's DOI, TCIA collection URL or name matches one
   IDC collection or analysis result (`match_idc`). Automatic; the facts come from IDC's index.
2. Published tables: the Medical Segmentation Decathlon's archives and MedMNIST's npz files with their MD5s
   (`app/data/sources/*.json`).
3. URL rules for hosts with a file API: OpenNeuro, Zenodo, figshare, Hugging Face, Harvard Dataverse, GitHub
   (release assets, else the repository's files), and DOIs whose registrant is one of those hosts (automatic);
   Kaggle, Synapse and PhysioNet (the operator's account).
4. TCIA radiology collections IDC does not hold: TCIA's own NBIA API (automatic for public collections).
5. Everything else is manual, with the reason and the next step for the user (register, download, point a
   `local` source at the copy).

Nothing here touches the network: a rule says what the worker will ask the host, and the worker reports what
the host answers. A rule never guesses a licence: it records one only where the source states it (IDC's index,
the Decathlon's and MedMNIST's published terms, OpenNeuro's CC0 policy for public datasets).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from app.sources.idc import IdcEntry, binding_licence
from app.sources.schemas import FetchMethod

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "sources"

CREDENTIAL_SETTINGS = {
    "kaggle": "IMAGINGX_KAGGLE_USERNAME and IMAGINGX_KAGGLE_KEY",
    "synapse": "IMAGINGX_SYNAPSE_TOKEN",
    "physionet": "IMAGINGX_PHYSIONET_USERNAME and IMAGINGX_PHYSIONET_PASSWORD",
}
CREDENTIAL_HELP = {
    "kaggle": "an API token from kaggle.com > Settings > API (and the competition's rules accepted there)",
    "synapse": "a personal access token from synapse.org > Account Settings (and the dataset's terms accepted)",
    "physionet": "a credentialed PhysioNet account that has signed the project's data use agreement",
}


@dataclass(frozen=True)
class Resolution:
    """How one dataset will be fetched. `note`: for manual datasets the reason and the next step, for
    credentialed ones the settings to set, for automatic ones what will be fetched."""

    fetch: FetchMethod
    rule: str
    note: str
    descriptor: dict[str, Any] | None = None
    facts: dict[str, Any] | None = None
    licence: str | None = None
    licence_source: str | None = None
    download_bytes: int | None = None
    matched: str | None = None  # what matched (a DOI, a URL, a name), for provenance


@dataclass(frozen=True)
class DatasetKeys:
    """What the rules look at: names and every landing-page URL the survey gave for the dataset."""

    slug: str
    name: str
    aliases: Sequence[str] = ()
    urls: Sequence[str] = ()
    modalities: Sequence[str] = field(default_factory=tuple)


def normalised(text: str) -> str:
    """Letters and digits only, lower case: `NSCLC-Radiomics`, `nsclc_radiomics` and `NSCLC Radiomics` agree."""
    return re.sub(r"[^0-9a-z]", "", text.lower())


def doi_in(url: str) -> str | None:
    """The DOI a URL names (doi.org links, Zenodo's `/doi/` pages), lower case; None if it names none."""
    match = re.search(r"(10\.\d{4,9}/[^\s?#]+)", unquote(url))
    if not match or not re.search(r"doi\.org/|/doi/", url, re.IGNORECASE):
        return None
    return match.group(1).rstrip("/.").lower()


# -- NCI Imaging Data Commons --------------------------------------------------------------------------------


def _tcia_slug(url: str) -> str | None:
    """The collection a TCIA URL names: `/collection/lidc-idri/` or the old wiki's `/display/Public/LIDC-IDRI`."""
    parts = urlsplit(url)
    if "cancerimagingarchive.net" not in (parts.hostname or ""):
        return None
    path = unquote(parts.path.replace("+", " "))
    match = re.search(r"/collection/([^/]+)", path) or re.search(r"/display/[^/]+/([^/]+)", path)
    return match.group(1) if match else None


@dataclass(frozen=True)
class IdcIndex:
    """IDC's entries looked up by DOI and by normalised name or id."""

    by_doi: dict[str, list[IdcEntry]]
    by_name: dict[str, list[IdcEntry]]

    @classmethod
    def build(cls, entries: Iterable[IdcEntry]) -> IdcIndex:
        by_doi: dict[str, list[IdcEntry]] = {}
        by_name: dict[str, list[IdcEntry]] = {}
        for entry in entries:
            for doi in entry.dois:
                by_doi.setdefault(doi, []).append(entry)
            names = {normalised(entry.id)}
            if entry.kind == "collection":
                names.add(normalised(entry.name))
            for name in names - {""}:
                by_name.setdefault(name, []).append(entry)
        return cls(by_doi, by_name)


def match_idc(keys: DatasetKeys, index: IdcIndex) -> tuple[IdcEntry | None, str]:
    """The one IDC entry this dataset is, and what matched; (None, why) when none or several do.

    Evidence in order of strength: a DOI in a URL, a TCIA collection URL's slug, then the dataset's name or an
    alias. The first kind of evidence that finds anything decides; if it finds two different entries the
    dataset is left unmatched rather than guessed (a survey row that names two collections is two datasets)."""
    dois = [d for d in (doi_in(u) for u in keys.urls) if d]
    slugs = [s for s in (_tcia_slug(u) for u in keys.urls) if s]
    evidence = (
        ("DOI", [(d, index.by_doi.get(d, [])) for d in dois]),
        ("TCIA URL", [(s, index.by_name.get(normalised(s), [])) for s in slugs]),
        ("name", [(n, index.by_name.get(normalised(n), [])) for n in (keys.name, *keys.aliases) if n]),
    )
    for what, found in evidence:
        hits = {(e.kind, e.id): (e, value) for value, entries in found for e in entries}
        if len(hits) == 1:
            entry, value = next(iter(hits.values()))
            return entry, f"{what} {value}"
        if len(hits) > 1:
            names = ", ".join(sorted(f"{e.kind} {e.id}" for e, _ in hits.values()))
            return None, f"its {what} matches several IDC entries ({names}); not guessed"
    return None, "no IDC collection or analysis result has its DOI, TCIA URL or name"


def _idc_resolution(entry: IdcEntry, matched: str, index_version: str) -> Resolution:
    descriptor: dict[str, Any] = {"kind": "idc"}
    if entry.kind == "collection":
        descriptor["collection_id"] = entry.id
    else:
        descriptor["analysis_result_id"] = entry.id
    facts = entry.facts(index_version)
    modalities = ", ".join(list(entry.modalities)[:6])
    # an analysis result's objects label image series of other collections, fetched with it: its own bytes
    # would understate the download, and which series it labels is known only when the job reads them
    size = entry.bytes if entry.kind == "collection" else None
    return Resolution(
        FetchMethod.automatic,
        "idc",
        f"NCI Imaging Data Commons {entry.kind.replace('_', ' ')} `{entry.id}`: {entry.series:,} DICOM series "
        f"({modalities}) of {entry.subjects:,} subjects, fetched anonymously from IDC's public buckets",
        descriptor,
        facts=facts,
        licence=facts["licence"],
        licence_source=f"IDC index, idc-index-data {index_version}, per series" if facts["licence"] else None,
        download_bytes=size,
        matched=matched,
    )


# -- published tables ----------------------------------------------------------------------------------------


@cache
def _table(name: str) -> dict[str, Any]:
    table: dict[str, Any] = json.loads((DATA_DIR / f"{name}.json").read_text())
    return table


def _msd_task(keys: DatasetKeys) -> dict[str, Any] | None:
    """`MSD03-Liver`, `MSD01 BrainTumour`, or `Task03_Liver` on a Decathlon page: the task by its number.
    A bare `Task 1` is not enough: many challenges number their tasks (`BCNB Task-1`, `StructSeg2019 Task 1`)."""
    match = re.search(r"\bmsd[\s_-]?0?(\d{1,2})\b", keys.name, re.IGNORECASE)
    decathlon = any("medicaldecathlon.com" in u for u in keys.urls) or "decathlon" in keys.name.lower()
    if not match and decathlon:
        match = re.search(r"\btask[\s_-]?0?(\d{1,2})\b", keys.name, re.IGNORECASE)
    if not match:
        return None
    return next((t for t in _table("msd")["tasks"] if t["number"] == int(match.group(1))), None)


def _msd_resolution(task: dict[str, Any]) -> Resolution:
    table = _table("msd")
    return Resolution(
        FetchMethod.automatic,
        "msd",
        f"Medical Segmentation Decathlon {task['task']}: one archive with published MD5",
        {
            "kind": "http",
            "files": [{"url": table["url"].format(task=task["task"]), "md5": task["md5"]}],
            "layout": "auto",
        },
        licence=table["licence"],
        licence_source=table["licence_source"],
        download_bytes=task.get("bytes"),
        matched=f"name {task['task']}",
    )


def _medmnist_flags(keys: DatasetKeys) -> list[dict[str, Any]]:
    """MedMNIST rows: a named subset (`BreastMNIST`) or the whole collection (`MedMNIST`, every 2D subset)."""
    flags = _table("medmnist")["flags"]
    name = normalised(keys.name)
    named = [f for f in flags if normalised(f["flag"]) == name]
    if named:
        return named
    if name in ("medmnist", "medmnistv2", "medmnistplus") or any(
        "medmnist.com" in (urlsplit(u).hostname or "") for u in keys.urls
    ):
        return [f for f in flags if not f["flag"].endswith("3d")]
    return []


def _medmnist_resolution(flags: list[dict[str, Any]]) -> Resolution:
    table = _table("medmnist")
    files = [
        {"url": table["url"].format(flag=f["flag"]), "md5": f["md5"], "name": f"{f['flag']}.npz"}
        for f in flags
    ]
    names = ", ".join(f["flag"] for f in flags)
    return Resolution(
        FetchMethod.automatic,
        "medmnist",
        f"MedMNIST npz arrays ({names}, 28 px) from Zenodo record {table['record']}, MD5s as the medmnist "
        "package lists them; official train/val/test splits",
        # one subset's class names name its classes; several subsets keep theirs as `flag/id`, apart
        {"kind": "http", "files": files, "layout": "auto"}
        | ({"labels": dict(flags[0]["labels"])} if len(flags) == 1 else {}),
        licence=binding_licence({f["licence"]: 1 for f in flags}),
        licence_source=table["licence_source"],
        download_bytes=sum(f.get("bytes") or 0 for f in flags) or None,
        matched="name " + names,
    )


# -- URL rules -----------------------------------------------------------------------------------------------

_ZENODO_RECORD = re.compile(r"zenodo\.org/(?:records?|deposit)/(\d+)", re.IGNORECASE)
_ZENODO_DOI = re.compile(r"^10\.5281/zenodo\.(\d+)$")
_FIGSHARE_DOI = re.compile(r"^10\.6084/m9\.figshare\.(\d+)(?:\.v(\d+))?$")
_FIGSHARE_ARTICLE = re.compile(r"figshare\.com/articles/(?:[^/]+/)*?(?:[^/]+/)?(\d{5,})(?:/(\d+))?/?$")


def _automatic(rule: str, note: str, descriptor: dict[str, Any], matched: str, **facts: Any) -> Resolution:
    return Resolution(FetchMethod.automatic, rule, note, descriptor, matched=matched, **facts)


def _url_resolution(url: str) -> Resolution | None:
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower().removeprefix("www.")
    path = unquote(parts.path)
    if host == "openneuro.org" and (match := re.match(r"/datasets/(ds\d{6})(?:/versions/([\w.-]+))?", path)):
        dataset, version = match.groups()
        descriptor = {"kind": "openneuro", "dataset": dataset} | ({"version": version} if version else {})
        return _automatic(
            "openneuro",
            f"OpenNeuro {dataset} "
            + (f"snapshot {version}" if version else "(its latest snapshot when the job runs)")
            + ", BIDS, files listed by OpenNeuro's API",
            descriptor,
            url,
            licence="CC0-1.0",
            licence_source="OpenNeuro: every public dataset is released under CC0",
        )
    if match := _ZENODO_RECORD.search(url):
        return _automatic(
            "zenodo",
            f"Zenodo record {match.group(1)}, files with MD5",
            {"kind": "zenodo", "record": match.group(1)},
            url,
        )
    if host.endswith("figshare.com") and "/s/" not in path and (match := _FIGSHARE_ARTICLE.search(path)):
        article, version = match.groups()
        descriptor = {"kind": "figshare", "article": article} | ({"version": int(version)} if version else {})
        return _automatic("figshare", f"figshare article {article}, files with MD5", descriptor, url)
    if host == "huggingface.co" and (match := re.match(r"/datasets/([\w.-]+/[\w.-]+)", path)):
        return _automatic(
            "huggingface",
            f"Hugging Face dataset {match.group(1)} (main), files with checksums",
            {"kind": "huggingface", "repo": match.group(1)},
            url,
        )
    if doi := doi_in(url):
        return _doi_resolution(doi, url)
    if host == "kaggle.com":
        return _kaggle_resolution(path, url)
    if host == "synapse.org" and (match := re.search(r"(syn\d+)", url)):
        return _credentials("synapse", {"kind": "synapse", "entity": match.group(1)}, url)
    if host == "physionet.org" and (match := re.match(r"/content/([\w.-]+)/([\w.-]+)", path)):
        project, version = match.groups()
        return _credentials("physionet", {"kind": "physionet", "project": project, "version": version}, url)
    if host == "dataverse.harvard.edu" and (pid := parse_qs(parts.query).get("persistentId")):
        return _dataverse(pid[0].removeprefix("doi:"), url)
    return None


def _doi_resolution(doi: str, url: str) -> Resolution | None:
    if match := _ZENODO_DOI.match(doi):
        return _automatic(
            "zenodo",
            f"Zenodo record {match.group(1)} (DOI {doi})",
            {"kind": "zenodo", "record": match.group(1)},
            url,
        )
    if match := _FIGSHARE_DOI.match(doi):
        article, version = match.groups()
        descriptor = {"kind": "figshare", "article": article} | ({"version": int(version)} if version else {})
        return _automatic("figshare", f"figshare article {article} (DOI {doi})", descriptor, url)
    if doi.startswith("10.7910/dvn/"):
        return _dataverse(doi, url)
    return None


def _dataverse(doi: str, url: str) -> Resolution:
    return _automatic(
        "dataverse",
        f"Harvard Dataverse dataset doi:{doi.upper()}, files with checksums from its API",
        {"kind": "dataverse", "server": "https://dataverse.harvard.edu", "doi": doi.upper()},
        url,
    )


def _kaggle_resolution(path: str, url: str) -> Resolution | None:
    if match := re.match(r"/(?:c|competitions)/([\w-]+)", path):
        return _credentials("kaggle", {"kind": "kaggle", "competition": match.group(1)}, url)
    match = re.match(r"/(?:datasets/)?([\w-]+)/([\w-]+)", path)
    if match and match.group(1) not in ("code", "discussions", "models", "docs"):
        return _credentials(
            "kaggle", {"kind": "kaggle", "dataset": f"{match.group(1)}/{match.group(2)}"}, url
        )
    return None


def _credentials(host: str, descriptor: dict[str, Any], url: str) -> Resolution:
    return Resolution(
        FetchMethod.credentials,
        host,
        f"needs the operator's {host.capitalize()} account: set {CREDENTIAL_SETTINGS[host]} "
        f"({CREDENTIAL_HELP[host]})",
        descriptor,
        matched=url,
    )


# -- manual --------------------------------------------------------------------------------------------------

MANUAL_HOSTS = (
    ("grand-challenge.org", "Grand Challenge: join the challenge with your account (data often after approval)"),
    ("tianchi.aliyun.com", "Tianchi: download after logging in to Alibaba Cloud"),
    ("heywhale.com", "Heywhale: download after logging in"),
    ("opendatalab", "OpenDataLab: download with its CLI after logging in"),
    ("aicrowd.com", "AIcrowd: download after joining the challenge"),
    ("codalab", "CodaLab: download after joining the competition"),
    ("drive.google.com", "Google Drive: no checksummed file list; download it yourself"),
    ("mendeley.com", "Mendeley Data: no adapter yet; download the files from the page"),
    ("nitrc.org", "NITRC: download from the project page (some need an account)"),
)  # fmt: skip


def _manual(keys: DatasetKeys, reason: str | None = None) -> Resolution:
    url = next((u for u in keys.urls if u), None)
    if url is None:
        return Resolution(FetchMethod.manual, "none", "the survey gives no URL for this dataset")
    host = (urlsplit(url).hostname or "").lower()
    step = next((text for pattern, text in MANUAL_HOSTS if pattern in host), None)
    why = reason or step or f"{host or url}: a landing page with no machine-readable file list"
    return Resolution(
        FetchMethod.manual,
        "manual",
        f"{why}. Then run `imagingx catalog set-source` with a `local` source pointing at your copy. ({url})",
    )


# modalities TCIA serves as whole-slide images or microscopy (not through NBIA's DICOM radiology API)
PATHOLOGY = frozenset({"HISTOPATHOLOGY", "MICROSCOPY"})


def _tcia_resolution(keys: DatasetKeys, why_not_idc: str) -> Resolution:
    """A TCIA dataset IDC does not hold: a radiology collection through TCIA's NBIA API; pathology, microscopy
    and analysis results (zip files on their pages) stay manual."""
    analysis = any("/analysis-result/" in u for u in keys.urls)
    if analysis or not keys.modalities or set(keys.modalities) <= PATHOLOGY:
        what = "an analysis result" if analysis else "pathology or microscopy data"
        return _manual(keys, f"TCIA {what} not in IDC ({why_not_idc}): download it from its TCIA page")
    slug = next((s for s in (_tcia_slug(u) for u in keys.urls) if s), None)
    collection = keys.name if slug is None or slug.isdigit() else slug
    return Resolution(
        FetchMethod.automatic,
        "tcia",
        f"TCIA collection {collection!r} through TCIA's NBIA API (not in IDC: {why_not_idc}); a collection "
        "with limited access fails with the reason, and then needs your approved copy as a `local` source",
        {"kind": "tcia", "collection": collection},
        matched=slug or keys.name,
    )


def _github_resolution(url: str) -> Resolution | None:
    match = re.match(r"https?://(?:www\.)?github\.com/([\w.-]+)/([\w.-]+)", url)
    if not match or match.group(1) in ("orgs", "topics", "sponsors"):
        return None
    repo = f"{match.group(1)}/{match.group(2).removesuffix('.git')}"
    return Resolution(
        FetchMethod.automatic,
        "github",
        f"GitHub {repo}: the latest release's assets (sha256), or without a release the repository's files at "
        "its default branch (git blob ids). Many dataset repositories hold only code and a link to the data: "
        "the job then says it found no images",
        {"kind": "github", "repo": repo},
        matched=url,
    )


def resolve_dataset(keys: DatasetKeys, idc: IdcIndex, idc_version: str) -> Resolution:
    """The first rule that applies (module docstring), else manual with the reason."""
    entry, matched = match_idc(keys, idc)
    if entry is not None:
        return _idc_resolution(entry, matched, idc_version)
    if task := _msd_task(keys):
        return _msd_resolution(task)
    if flags := _medmnist_flags(keys):
        return _medmnist_resolution(flags)
    for url in keys.urls:
        if url and (resolution := _url_resolution(url) or _github_resolution(url)) is not None:
            return resolution
    if any("cancerimagingarchive.net" in u or (doi_in(u) or "").startswith("10.7937/") for u in keys.urls):
        return _tcia_resolution(keys, matched)
    return _manual(keys)
