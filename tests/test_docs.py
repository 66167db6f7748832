"""Promises the README makes: every setting is documented, and the two set-up commands are there."""

import re
from pathlib import Path

from app.core.config import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def env_name(field: str) -> str:
    return field.upper() if field in ("database_url", "redis_url") else f"IMAGINGX_{field.upper()}"


def test_every_setting_is_documented_in_the_readme() -> None:
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", README, flags=re.MULTILINE))
    expected = {env_name(name) for name in Settings.model_fields}
    assert expected - documented == set(), "settings missing from the README's settings table"
    assert documented - expected == set(), "README documents settings that do not exist"


def test_readme_holds_the_two_setup_commands() -> None:
    commands = re.findall(r"```sh\n(.+?)\n```", README, flags=re.DOTALL)
    assert len(commands) == 2
    assert commands[0].endswith("imagingx serve")
    assert commands[1].endswith("pytest")
