"""All configuration, read once from the environment (prefix IMAGINGX_, plus DATABASE_URL and REDIS_URL).

Every field here is documented in the README's settings table; tests/test_docs.py fails when one is not.
"""

from functools import lru_cache
from pathlib import Path

from platformdirs import user_data_dir
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    return Path(user_data_dir("imagingx", appauthor=False))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IMAGINGX_", extra="ignore")

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "IMAGINGX_DATABASE_URL"),
        description="PostgreSQL URL; unset means `imagingx serve` starts an embedded PostgreSQL.",
    )
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_URL", "IMAGINGX_REDIS_URL"),
        description="Redis URL (Celery broker and results); unset means `imagingx serve` starts one.",
    )
    home: Path = Field(
        default_factory=_default_home,
        description="Folder holding all local state: embedded database, redis, pid files, bundle store.",
    )
    storage_url: str | None = Field(
        default=None, description="Folder (path or file:// URL) of the bundle store; default `<home>/store`."
    )
    page_size_default: int = Field(default=25, description="Results per page when `page_size` is not given.")
    page_size_max: int = Field(default=200, description="Largest accepted `page_size`; larger is a 422.")
    facet_size: int = Field(default=30, description="Values shown per facet before it says `truncated`.")
    near_matches_max: int = Field(default=10, description="Near matches returned beside strict results.")
    query_timeout_ms: int = Field(
        default=2000, description="PostgreSQL statement timeout for search queries."
    )
    log_level: str = Field(default="info", description="Log level of the web and worker processes.")
    allow_private_sources: bool = Field(
        default=False,
        description="Let workers fetch from private, loopback and link-local addresses (tests, intranets).",
    )
    zenodo_api_url: str = Field(
        default="https://zenodo.org/api", description="Base URL of the Zenodo record API."
    )
    huggingface_url: str = Field(
        default="https://huggingface.co", description="Base URL of the Hugging Face Hub."
    )
    figshare_api_url: str = Field(
        default="https://api.figshare.com/v2", description="Base URL of the figshare API."
    )
    github_api_url: str = Field(default="https://api.github.com", description="Base URL of the GitHub API.")
    github_raw_url: str = Field(
        default="https://raw.githubusercontent.com",
        description="Base URL of GitHub's raw file host (a repository's files at one commit).",
    )
    tcia_api_url: str = Field(
        default="https://services.cancerimagingarchive.net/nbia-api/services/v1",
        description="Base URL of TCIA's NBIA REST API (v1), used by `tcia` sources.",
    )
    idc_s3_url: str = Field(
        default="https://s3.amazonaws.com",
        description="S3 endpoint of IDC's public buckets (`idc` sources; path-style, anonymous).",
    )
    idc_index_dir: Path | None = Field(
        default=None,
        description="Folder holding idc-index's seg_index.parquet / rtstruct_index.parquet, if any.",
    )
    openneuro_url: str = Field(
        default="https://openneuro.org",
        description="Base URL of OpenNeuro (its GraphQL API is `/crn/graphql`).",
    )
    doi_resolver_url: str = Field(
        default="https://doi.org", description="DOI resolver that `doi` sources follow to their landing page."
    )
    kaggle_api_url: str = Field(
        default="https://www.kaggle.com/api/v1", description="Base URL of the Kaggle API (`kaggle` sources)."
    )
    kaggle_username: str | None = Field(
        default=None, description="Kaggle user name, with `kaggle_key` (kaggle.com > Settings > API)."
    )
    kaggle_key: SecretStr | None = Field(default=None, description="Kaggle API key of `kaggle_username`.")
    synapse_api_url: str = Field(
        default="https://repo-prod.prod.sagebase.org", description="Base URL of the Synapse REST API."
    )
    synapse_token: SecretStr | None = Field(
        default=None, description="Synapse personal access token (synapse.org > Account Settings)."
    )
    physionet_url: str = Field(default="https://physionet.org", description="Base URL of PhysioNet.")
    physionet_username: str | None = Field(
        default=None,
        description="PhysioNet user name, for credentialed projects (with `physionet_password`).",
    )
    physionet_password: SecretStr | None = Field(default=None, description="PhysioNet password.")
    local_source_roots: list[Path] = Field(
        default_factory=list,
        description="Folders that `local` sources may read from (JSON list); empty refuses every local source.",
    )
    download_concurrency: int = Field(default=4, ge=1, description="Files one worker downloads at once.")
    download_max_file_bytes: int = Field(
        default=200 * 2**30, ge=1, description="Largest file fetched when the source does not state a size."
    )
    unpack_max_bytes: int = Field(
        default=500 * 2**30, ge=1, description="Largest total size one archive may unpack to."
    )
    unpack_max_members: int = Field(default=2_000_000, ge=1, description="Most members one archive may hold.")
    unpack_max_ratio: float = Field(
        default=200.0, gt=1, description="Largest unpacked size / archive size ratio (zip bombs)."
    )

    bundle_max_bytes: int = Field(
        default=100 * 2**30, ge=1, description="Largest total download size of one bundle job; larger fails."
    )
    bundle_max_running: int = Field(
        default=2, ge=1, description="Bundle jobs that run at once; later ones wait in state `queued`."
    )
    celery_queue: str = Field(
        default="imagingx", min_length=1, description="Celery queue the web and the workers use for jobs."
    )
    bundle_test_fraction: float = Field(
        default=0.2, ge=0, le=0.9, description="Share of subjects a bundle puts in its test split by default."
    )

    # security (app/core/security.py)
    trusted_origins: list[str] = Field(
        default_factory=list,
        description="Origins besides the server's own whose pages may post to it (JSON list; a reverse proxy's).",
    )
    worker_user: str = Field(
        default="nobody",
        min_length=1,
        description="Account the worker drops to when `imagingx serve` (or `imagingx worker`) runs as root: it "
        "parses untrusted archives and images. An operator may create a dedicated account for it.",
    )
    rate_limit_plans: str = Field(
        default="60/minute, 2000/day",
        pattern=r"^\s*(\d+\s*/\s*(second|minute|hour|day)\s*(,\s*|$))*$",
        description="Plans one client address may create, per window (N/second|minute|hour|day, comma "
        "separated); empty: no limit.",
    )
    rate_limit_selections: str = Field(
        default="60/minute, 2000/day",
        pattern=r"^\s*(\d+\s*/\s*(second|minute|hour|day)\s*(,\s*|$))*$",
        description="Selections one client address may create, per window; empty: no limit.",
    )
    rate_limit_bundles: str = Field(
        default="20/minute, 200/day",
        pattern=r"^\s*(\d+\s*/\s*(second|minute|hour|day)\s*(,\s*|$))*$",
        description="Bundle jobs one client address may request, per window; empty: no limit.",
    )

    # capacity of the web side (app/core/admission.py, app/core/db.py)
    web_processes: int = Field(
        default=0,
        ge=0,
        description="Web processes `imagingx serve` and `imagingx web` run; 0: one per CPU core (at most 4).",
    )
    web_concurrency: int = Field(
        default=4,
        ge=1,
        description="Requests one web process works on at once (its database pool holds twice as many "
        "connections); more wait their turn.",
    )
    web_queue_seconds: float = Field(
        default=0.75,
        gt=0,
        description="Longest a request waits for its turn; then it gets 503 with `Retry-After`.",
    )
    web_queue_max: int = Field(
        default=200, ge=0, description="Requests one web process lets wait; beyond, 503 at once."
    )

    # bounded input (app/core/limits.py, workers/sources/download.py)
    max_json_body_bytes: int = Field(
        default=2**20,
        ge=1,
        description="Largest request body of a JSON (or other non-form) request; larger is a 413.",
    )
    max_form_body_bytes: int = Field(
        default=256 * 2**10, ge=1, description="Largest request body of an HTML form post; larger is a 413."
    )
    download_min_bytes_per_second: int = Field(
        default=16 * 2**10,
        ge=1,
        description="Slowest transfer a download may keep: a file's deadline is "
        "`download_grace_seconds` + its size / this rate; a hanging or slower server is cut off.",
    )
    download_grace_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Time every download gets on top of its size-scaled deadline; also the longest single wait.",
    )

    @property
    def store_url(self) -> str:
        return self.storage_url or str(self.home / "store")


@lru_cache
def get_settings() -> Settings:
    return Settings()
