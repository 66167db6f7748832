"""The boundary between the web side and the workers holds: the import contracts of pyproject.toml
([tool.importlinter]) are kept, every task the web side can ask for is one a worker registers (and the reverse),
and every domain error has an HTTP status."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_the_import_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout
    assert result.stdout.count(" KEPT") >= 4


def test_every_task_the_web_side_names_is_registered_by_the_workers_and_the_reverse() -> None:
    import workers.tasks  # noqa: F401 - what a worker imports at start (Celery's autodiscovery is lazy)
    from app.common import tasks
    from workers.celery_app import app as celery_app

    registered = {name for name in celery_app.tasks if not name.startswith("celery.")}
    assert registered == set(tasks.TASK_NAMES)
    # each constructor builds a message for a registered task, with as many arguments as the task takes
    constructors = {
        tasks.advance_bundle: ("job",),
        tasks.fetch_bundle_source: ("job", "slug"),
        tasks.harmonise_bundle_item: ("job", "item"),
        tasks.package_bundle: ("job",),
        tasks.clean_bundle_work: ("job",),
        tasks.resume_bundles: (),
    }
    for build, args in constructors.items():
        message = build(*args)
        implementation = celery_app.tasks[message.task]
        assert len(inspect.signature(implementation.run).parameters) == len(message.args), message.task


@pytest.mark.parametrize(
    "name", ["InvalidInput", "UnknownItems", "NotFound", "NotAllowed", "Conflict", "Gone", "NotOffered"]
)
def test_every_domain_error_has_an_http_status(name: str) -> None:
    from app.common import errors
    from app.core.errors import STATUS_OF

    assert getattr(errors, name) in STATUS_OF


def test_domain_errors_carry_no_http() -> None:
    import app.common.errors as domain

    source = inspect.getsource(domain)
    assert "fastapi" not in source and "starlette" not in source
    assert re.search(r"\b[1-5]\d\d\b", source) is None  # no status codes
