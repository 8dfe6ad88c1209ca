"""A model version's profile: what is known about it beyond its test metrics, one section per concern, kept beside
its card as `profile.json` (listed, with its checksum, in the card's `files`).

One shape shared by three capabilities, each writing its own section and reading the others':
- `drift`   (streams/drift/): the reference the live stream is compared with (label shares, score bins, lengths,
             languages, a summary of the sentence vectors), made from validation data or a trusted window of traffic;
- `bias`    (models/bias.py): the identity-term report (false-positive rates, subgroup / BPSN / BNSP AUCs per group);
- `quality` (feedback): quality measured on people's verdicts.
The promotion gate (models/gate.py) reads the profiles of the champion and the challenger.

Each section is a JSON object with at least `made_at` (ISO 8601 UTC) and `made_from` (what data: a dataset and
split, a file, or a window of traffic, with the number of rows). Runtime side: standard library only.
"""

import json
from datetime import datetime, timezone
from pathlib import Path

from streamsense.models.registry import file_entries, read_card, write_card

PROFILE = "profile.json"
FORMAT = 1
SECTIONS = ("drift", "bias", "quality")


class ProfileError(ValueError):
    pass


def read_profile(model_dir: Path) -> dict:
    """The model's profile: {"format", "model", "sections": {name: section}}; an empty one where none was made."""
    model_dir = Path(model_dir)
    path = model_dir / PROFILE
    if not path.is_file():
        card = read_card(model_dir)
        return {"format": FORMAT, "model": f"{card.get('name')}:{card.get('version')}", "sections": {}}
    profile = json.loads(path.read_text(encoding="utf-8"))
    if profile.get("format") != FORMAT:
        raise ProfileError(f"{path}: format {profile.get('format')!r} is not {FORMAT}")
    return profile


def section(model_dir: Path, name: str) -> dict | None:
    """One section of the model's profile, or None where it was never made."""
    return read_profile(model_dir)["sections"].get(name)


def write_section(model_dir: Path, name: str, data: dict, made_from: dict | str) -> dict:
    """Record `data` as section `name` of the model's profile (replacing an earlier one) and re-list profile.json
    with its checksum in the card's `files`, so `verify` keeps covering it. Returns the section as written."""
    if name not in SECTIONS:
        raise ProfileError(f"unknown profile section {name!r}: one of {', '.join(SECTIONS)}")
    model_dir = Path(model_dir)
    profile = read_profile(model_dir)
    written = {"made_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "made_from": made_from, **data}
    profile["sections"][name] = written
    (model_dir / PROFILE).write_text(json.dumps(profile, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    card = read_card(model_dir)
    card["files"] = {**card["files"], **file_entries(model_dir, [PROFILE])}
    write_card(model_dir, card)
    return written
