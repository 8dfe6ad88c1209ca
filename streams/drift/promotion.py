"""The drift side of the promotion gate (models/gate.py): a challenger is promoted only with a drift reference of its
own, made for its heads, so its windows can be judged from its first hour in production."""

from pathlib import Path

from streamsense.models.gate import CheckResult, gate_check
from streamsense.models.profile import section
from streamsense.models.registry import read_card
from streamsense.streams.drift.compare import Reference

NAME = "drift_reference"


@gate_check(NAME)
def drift_reference(champion_dir: Path, challenger_dir: Path, evidence: dict) -> CheckResult:
    card = read_card(challenger_dir)
    label = f"{card.get('name')}:{card.get('version')}"
    found = section(challenger_dir, "drift")
    if found is None:
        return CheckResult(NAME, False, f"{label} has no drift reference: make one with "
                                        f"`streamsense drift reference --model {label}`")
    reference = Reference.from_section(found)
    heads = [t["name"] for t in card["tasks"]]
    if [h for h, _, _ in reference.layout.heads] != heads:
        return CheckResult(NAME, False, f"{label}'s drift reference was made for heads "
                                        f"{', '.join(h for h, _, _ in reference.layout.heads)}, the model has "
                                        f"{', '.join(heads)}: make it again")
    if reference.messages < reference.min_messages:
        return CheckResult(NAME, False, f"{label}'s drift reference holds {reference.messages} texts, fewer than a "
                                        f"window's {reference.min_messages}")
    rows = found.get("made_from", {}).get("rows") if isinstance(found.get("made_from"), dict) else None
    return CheckResult(NAME, True, f"{label} has a drift reference of {reference.messages} texts"
                       + (f" ({rows} rows made from)" if rows and rows != reference.messages else "")
                       + f", made {found.get('made_at')}", {"messages": reference.messages})
