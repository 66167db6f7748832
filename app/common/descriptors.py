"""Source descriptors: how a catalog entry says where its data comes from and how its files are laid out.

A descriptor is a JSON object discriminated by `kind`:

- `{"kind": "http", "files": [{"url", "sha256" | "md5", "size", "name"?}]}`: a plain list of files;
- `{"kind": "zenodo", "record": "6802613", "include"?: [glob]}`: every file of a Zenodo record (md5 from the API);
- `{"kind": "huggingface", "repo": "org/name", "revision": "main" | sha, "include"?: [glob]}`: a dataset repo;
- `{"kind": "figshare", "article": "1234567", "version"?: 2, "include"?: [glob]}`: a figshare article (md5);
- `{"kind": "github", "repo": "owner/name", "tag"?: "v1.0", "include"?: [glob]}`: a release's assets (sha256);
  without `tag` the latest release's, or with no release the repository's files at its default branch's
  current commit (git blob ids);
- `{"kind": "local", "path": "/data/BraTS2021"}`: a copy the user already has, under `local_source_roots`;
- `{"kind": "openneuro", "dataset": "ds003097", "version"?: "1.2.1", "include"?: [glob]}`: an OpenNeuro snapshot
  (default the latest), files verified by their git-annex key or git blob id;
- `{"kind": "doi", "doi": "10.5281/zenodo.7840229", "include"?: [glob]}`: resolved when fetched, to the Zenodo
  record, figshare article or Dataverse dataset the DOI lands on;
- `{"kind": "dataverse", "server": "https://dataverse.harvard.edu", "doi": "10.7910/DVN/6ACUZJ", "version"?: "2.0",
  "include"?: [glob]}`: a Dataverse dataset's public files (default the latest published version), with their
  checksums;
- `{"kind": "kaggle", "dataset": "owner/name", "version"?: 3}` or `{"kind": "kaggle", "competition": "name"}`: the
  archive of a Kaggle dataset or competition's data, with the operator's Kaggle account (no checksum published:
  verified by size only);
- `{"kind": "synapse", "entity": "syn12345678", "include"?: [glob]}`: a Synapse file, or every file under a
  project or folder, with the operator's Synapse token (md5);
- `{"kind": "physionet", "project": "vindr-cxr", "version": "1.0.0", "include"?: [glob]}`: a PhysioNet project
  version's files, as listed by its SHA256SUMS.txt (credentialed projects need the operator's account);
- `{"kind": "tcia", "collection": "CT-ORG"}`: a public radiology collection of The Cancer Imaging Archive through
  its NBIA API, one ZIP per series verified against its md5hashes.csv (limited-access collections are refused);
- `{"kind": "idc", "collection_id": "lidc_idri", "analysis_result_id"?: "...", "modalities"?: ["CT", "SEG"]}`: a
  collection or analysis result of NCI Imaging Data Commons (IDC's lowercase ids, one or both), series chosen from
  the idc-index-data index and fetched anonymously from IDC's public buckets, one file per DICOM instance (md5).

Every kind also takes `labels` (the label table: source label id -> name) and `layout`: `"auto"` (the
harmonising step recognises the folder conventions) or explicit: `images` and `labels` globs (relative to the
source's root), a `pairing` rule (`{"by": "stem"}`, `{"by": "suffix", "suffix": "_seg"}` or
`{"by": "regex", "pattern": "...(?P<case>...)..."}`), the official test set (`"split": {"test": [globs]}`:
those cases stay test; training and validation are split by patient, deterministically, for every source) and
optionally `subject`, a regex whose group `(?P<subject>...)` names the patient in an image's path. `subject` may
also sit beside `labels` at the source's top level, where it applies whatever layout is detected (`auto` too).
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)


class SourceError(Exception):
    """A source that cannot be resolved or fetched; the message says which file and why."""


class CredentialsMissingError(SourceError):
    """The host needs the operator's own account and this server has none configured: `setting` names the
    environment variable(s) to set, so the job page can say exactly that."""

    def __init__(self, message: str, setting: str) -> None:
        super().__init__(message)
        self.setting = setting


# an authority: optional user info, then a bracketed IPv6 literal or a name / IPv4 address, then an optional
# port; anything after a closing bracket other than a port (`[::1]x`) is malformed
_AUTHORITY = re.compile(r"(?:[^@/?#]*@)?(?:\[(?P<ipv6>[^\]/]*)\]|[^\[\]:@/?#]+)(?::[0-9]*)?")


def check_http_url(url: str) -> str:
    """`url` unchanged if it is an http(s) URL with a well-formed host; ValueError saying what is wrong
    otherwise (a malformed IPv6 literal such as `http://[::1`, `http://[zzz]/`, `http://[::1]x/`, a port
    out of range). Descriptor validation calls this, so a bad URL is refused when the descriptor is set,
    not when a worker first fetches it."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is the check (ValueError when out of range)
    except ValueError as exc:
        raise ValueError(f"malformed URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    authority = _AUTHORITY.fullmatch(parts.netloc)
    if not parts.hostname or authority is None:
        raise ValueError(f"malformed host {parts.netloc!r}")
    literal = authority.group("ipv6")
    if literal is not None:
        try:
            ipaddress.IPv6Address(literal.split("%", 1)[0])
        except ValueError:
            raise ValueError(f"malformed IPv6 address [{literal}]") from None
    return url


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _relative_glob(value: str) -> str:
    path = PurePosixPath(value)
    if not value or path.is_absolute() or ".." in path.parts:
        raise ValueError(f"{value!r} must be a non-empty relative glob without `..`")
    return value


class PairByStem(_Strict):
    by: Literal["stem"]


class PairBySuffix(_Strict):
    by: Literal["suffix"]
    suffix: str = Field(min_length=1, description="what the label's stem adds to the image's, e.g. `_seg`")


class PairByRegex(_Strict):
    by: Literal["regex"]
    pattern: str

    @field_validator("pattern")
    @classmethod
    def _compiles_with_case_group(cls, value: str) -> str:
        return regex_with_group(value, "case", "the case id")


Pairing = Annotated[PairByStem | PairBySuffix | PairByRegex, Field(discriminator="by")]


class ExplicitLayout(_Strict):
    images: str
    labels: str | None = None
    pairing: Pairing = PairByStem(by="stem")
    # only the official test set is taken from a source: a "train" or "validation" key would be ignored, so it is
    # refused instead of silently dropped
    split: dict[Literal["test"], list[str]] | None = None
    # a regex with a named group `subject`, searched in each image's path (relative to the source's root): the
    # patient, when one patient has several cases (visits, series); without it each case is its own subject
    subject: str | None = None

    @field_validator("images", "labels")
    @classmethod
    def _globs(cls, value: str | None) -> str | None:
        return None if value is None else _relative_glob(value)

    @field_validator("subject")
    @classmethod
    def _compiles_with_subject_group(cls, value: str | None) -> str | None:
        return _subject_regex(value)


def regex_with_group(value: str, group: str, meaning: str) -> str:
    """`value` if it is a regular expression with the named group `group` (which gives `meaning`); else a
    ValueError saying which, as pydantic reports it."""
    try:
        compiled = re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a regular expression: {exc}") from exc
    if group not in compiled.groupindex:
        raise ValueError(f"the pattern needs a named group `(?P<{group}>...)` giving {meaning}")
    return value


def _subject_regex(value: str | None) -> str | None:
    return None if value is None else regex_with_group(value, "subject", "the patient id")


class _Source(_Strict):
    layout: Literal["auto"] | ExplicitLayout = "auto"
    labels: dict[int, str] = Field(default_factory=dict, description="source label id -> name")
    # the patient rule for any layout, `auto` included (a 2D set whose file names carry the patient in a form
    # no common pattern knows): a regex with a named group `subject`, searched in each case's image path
    subject: str | None = None

    @field_validator("subject")
    @classmethod
    def _subject_rule(cls, value: str | None) -> str | None:
        return _subject_regex(value)

    @model_validator(mode="after")
    def _one_subject_rule(self) -> _Source:
        # two rules could disagree; the operator says which one holds
        if self.subject is not None and isinstance(self.layout, ExplicitLayout) and self.layout.subject:
            raise ValueError("`subject` is given both for the source and in its layout: give it once")
        return self

    @field_validator("labels")
    @classmethod
    def _label_table(cls, value: dict[int, str]) -> dict[int, str]:
        for label_id, name in value.items():
            if label_id < 0:
                raise ValueError(f"label id {label_id} is negative")
            if not name.strip():
                raise ValueError(f"label {label_id} has an empty name")
        return value


class HttpFile(_Strict):
    url: str
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    md5: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{32}$")
    size: int | None = Field(default=None, ge=0)
    name: str | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return check_http_url(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return None if value is None else _relative_glob(value)

    @model_validator(mode="after")
    def _checksum(self) -> HttpFile:
        if not (self.sha256 or self.md5):
            raise ValueError("needs a sha256 or md5 checksum (files are verified and cached by content)")
        return self

    @property
    def file_name(self) -> str:
        if self.name:
            return self.name
        tail = unquote(self.url.split("?", 1)[0].split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1])
        if not tail or tail in (".", "..") or "/" in tail or "\\" in tail:
            raise SourceError(f"{self.url}: cannot name the file from its URL; give `name`")
        return tail


class HttpSource(_Source):
    kind: Literal["http"]
    files: list[HttpFile] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> HttpSource:
        names = [f.file_name for f in self.files]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"several files are named {', '.join(duplicates)}; give each a distinct `name`")
        return self


# A host's numeric record id, kept as text; people write it as a JSON number as often as a string.
NumericId = Annotated[
    str,
    BeforeValidator(lambda value: str(value) if isinstance(value, int) else value),
    Field(pattern=r"^[0-9]+$"),
]
# `org/name` on the Hugging Face Hub and on GitHub alike
RepoName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")]
IncludeGlobs = Annotated[
    list[str], Field(default_factory=list, description="globs of file names; empty: all")
]


class ZenodoSource(_Source):
    kind: Literal["zenodo"]
    record: NumericId = Field(description="the record id, digits only")
    include: IncludeGlobs


class HuggingFaceSource(_Source):
    kind: Literal["huggingface"]
    repo: RepoName = Field(description="`org/name` of a dataset repo")
    revision: str = Field(default="main", pattern=r"^[\w.-][\w./-]*$")
    include: IncludeGlobs


class FigshareSource(_Source):
    kind: Literal["figshare"]
    article: NumericId = Field(description="the article id, digits only")
    version: int | None = Field(default=None, ge=1, description="a published version; default the latest")
    include: IncludeGlobs


class GitHubReleaseSource(_Source):
    kind: Literal["github"]
    repo: RepoName = Field(description="`owner/name`")
    tag: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="a release's tag, e.g. `v1.0`; default the latest release, else the default branch's files",
    )
    include: IncludeGlobs


class LocalSource(_Source):
    kind: Literal["local"]
    path: str = Field(min_length=1)

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must be an absolute path")
        return value


_DOI_PREFIXES = ("https://doi.org/", "http://doi.org/", "https://dx.doi.org/", "http://dx.doi.org/", "doi:")


def _bare_doi(value: str) -> str:
    value = value.strip()
    for prefix in _DOI_PREFIXES:
        if value.lower().startswith(prefix):
            value = value[len(prefix) :]
            break
    if not re.fullmatch(r"10\.\d{4,9}/\S+", value):
        raise ValueError(
            "must be a DOI such as `10.5281/zenodo.7840229` (a `doi:` or doi.org prefix is taken off)"
        )
    return value


# a DOI without `doi:` or a resolver in front: `10.7910/DVN/6ACUZJ`
Doi = Annotated[str, AfterValidator(_bare_doi)]
# a tag, version number or slug that goes into a URL path as it is
PathSafe = Annotated[str, Field(pattern=r"^[A-Za-z0-9][\w.-]*$", max_length=200)]


class OpenNeuroSource(_Source):
    kind: Literal["openneuro"]
    dataset: str = Field(pattern=r"^ds\d{6}$", description="the accession number, e.g. `ds003097`")
    version: PathSafe | None = Field(
        default=None, description="a snapshot tag, e.g. `1.2.1`; default the latest"
    )
    include: IncludeGlobs


class DoiSource(_Source):
    kind: Literal["doi"]
    doi: Doi
    include: IncludeGlobs


class DataverseSource(_Source):
    kind: Literal["dataverse"]
    server: str = Field(description="the installation's base URL, e.g. `https://dataverse.harvard.edu`")
    doi: Doi
    version: str | None = Field(
        default=None,
        pattern=r"^(\d+(\.\d+)?|:latest-published)$",
        description="a published version such as `2.0`; default the latest published",
    )
    include: IncludeGlobs

    @field_validator("server")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", value):
            raise ValueError("must be the http(s) base URL of a Dataverse installation")
        return check_http_url(value).rstrip("/")


class KaggleSource(_Source):
    kind: Literal["kaggle"]
    dataset: RepoName | None = Field(default=None, description="`owner/name` of a dataset")
    competition: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][\w-]*$", description="a competition")
    version: int | None = Field(
        default=None, ge=1, description="a dataset version number; default the latest"
    )

    @model_validator(mode="after")
    def _one_target(self) -> KaggleSource:
        if (self.dataset is None) == (self.competition is None):
            raise ValueError("give exactly one of `dataset` and `competition`")
        if self.version is not None and self.dataset is None:
            raise ValueError("`version` is a dataset's version; a competition's data has none")
        return self


class SynapseSource(_Source):
    kind: Literal["synapse"]
    entity: str = Field(pattern=r"^syn\d+$", description="a file, folder or project id, e.g. `syn12345678`")
    include: IncludeGlobs


class PhysioNetSource(_Source):
    kind: Literal["physionet"]
    project: PathSafe = Field(description="the project's slug, e.g. `vindr-cxr`")
    version: PathSafe = Field(description="the published version, e.g. `1.0.0`")
    include: IncludeGlobs


class TciaSource(_Source):
    kind: Literal["tcia"]
    collection: str = Field(
        min_length=1,
        max_length=200,
        description="a TCIA collection's name, e.g. `CT-ORG` (case and punctuation are ignored when matched)",
    )


# IDC's ids are lowercase snake case: `lidc_idri`, `nnu_net_bpr_annotations`
IdcId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_]*$", max_length=200)]


class IdcSource(_Source):
    kind: Literal["idc"]
    collection_id: IdcId | None = Field(
        default=None,
        description="an IDC collection, e.g. `lidc_idri`: its own series and those of analysis results on it",
    )
    analysis_result_id: IdcId | None = Field(
        default=None,
        description="an IDC analysis result, e.g. `pancreas_ct_seg`: its series and the image series its "
        "segmentations refer to; with `collection_id`, that collection's own series plus this result's",
    )
    modalities: list[Annotated[str, Field(pattern=r"^[A-Z0-9_]{1,16}$")]] = Field(
        default_factory=list,
        description="DICOM Modality values the series must have, e.g. `CT`, `SEG`; empty: all",
    )

    @model_validator(mode="after")
    def _target(self) -> IdcSource:
        if self.collection_id is None and self.analysis_result_id is None:
            raise ValueError("give `collection_id`, `analysis_result_id` or both")
        return self


AnySource = (
    HttpSource
    | ZenodoSource
    | HuggingFaceSource
    | FigshareSource
    | GitHubReleaseSource
    | LocalSource
    | OpenNeuroSource
    | DoiSource
    | DataverseSource
    | KaggleSource
    | SynapseSource
    | PhysioNetSource
    | TciaSource
    | IdcSource
)
SourceDescriptor = Annotated[AnySource, Field(discriminator="kind")]
_adapter: TypeAdapter[SourceDescriptor] = TypeAdapter(SourceDescriptor)

KINDS = (
    "http",
    "zenodo",
    "huggingface",
    "figshare",
    "github",
    "local",
    "openneuro",
    "doi",
    "dataverse",
    "kaggle",
    "synapse",
    "physionet",
    "tcia",
    "idc",
)


def parse_source(data: Any) -> AnySource:
    """Validate a descriptor (dict or JSON string); raise SourceError listing every problem as `loc: msg`."""
    try:
        if isinstance(data, str | bytes):
            return _adapter.validate_json(data)
        return _adapter.validate_python(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = ".".join(str(part) for part in error["loc"]) or "descriptor"
            message = error["msg"]
            if error["type"] == "union_tag_invalid" or error["type"] == "union_tag_not_found":
                message = f"`kind` must be one of {', '.join(KINDS)}"
            problems.append(f"{loc}: {message}")
        raise SourceError("invalid source descriptor: " + "; ".join(problems)) from exc
