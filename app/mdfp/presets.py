"""Preset specs shipped with the app (app/mdfp/presets/*.json), the survey's example goal first."""

import json
from functools import lru_cache
from pathlib import Path

from app.common.errors import NotFound
from app.mdfp.schemas import Preset

PRESETS_DIR = Path(__file__).resolve().parent / "presets"
SURVEY_PRESET = "survey-2d-foundation"


@lru_cache
def load_presets() -> tuple[Preset, ...]:
    """Every preset, validated (a broken preset file fails loudly at the first use, and in the tests)."""
    presets = []
    for path in sorted(PRESETS_DIR.glob("*.json")):
        preset = Preset.model_validate(json.loads(path.read_text(encoding="utf-8")))
        if preset.id != path.stem:
            raise ValueError(f"preset {path.name} says its id is {preset.id!r}")
        presets.append(preset)
    presets.sort(key=lambda p: (p.id != SURVEY_PRESET, p.id))
    return tuple(presets)


def get_preset(preset_id: str) -> Preset:
    for preset in load_presets():
        if preset.id == preset_id:
            return preset
    raise NotFound(f"preset {preset_id!r}")
