"""`streamsense models decide`: a head's decision policy (models/decision.py): the class prior its training mix put
into it, the prior it should decide under, and the logit offset between them; printed or recorded in the card."""

import json
from typing import Optional

import typer
from rich.console import Console

from streamsense.cli import models_app
from streamsense.models.registry import loss_weighting
from streamsense.settings import Settings


def _shares(text: list[str]) -> dict[str, float]:
    shares = {}
    for item in text:
        label, sep, value = item.partition("=")
        try:
            shares[label.strip().replace("-", "_")] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise typer.BadParameter(f"--prior {item!r}: write LABEL=SHARE, e.g. --prior positive=0.7")
    return shares


@models_app.command("decide")
def models_decide(
    model: Optional[str] = typer.Option(None, help="name[:version] in the registry, or a model directory "
                                                   "(default: STREAMSENSE_MODEL)."),
    head: str = typer.Option("sentiment", help="The head whose decision policy to state."),
    policy: str = typer.Option("balanced", help="balanced: decide as if the classes were equally likely; training: "
                                                "keep the training mix's prior; prior: the shares given by --prior."),
    prior: list[str] = typer.Option([], help="LABEL=SHARE for policy 'prior' (repeat per label)."),
    as_json: bool = typer.Option(False, "--json", help="Print the policy entry as JSON."),
    record: bool = typer.Option(False, help="Write the policy into the model card (model.json, MODEL_CARD.md): "
                                            "the runtime decides with it from then on."),
):
    """The class prior a head learned from its training mix (the train splits' class counts, the config's sampling
    and dataset weights, whether the loss weighed classes) and the logit offset that makes it decide under the
    policy's prior instead (docs/models.md, "Decision policy")."""
    from streamsense.models.decision import POLICIES, card_training_prior, state
    from streamsense.models.registry import read_card, resolve, write_card

    if policy not in POLICIES:
        raise typer.BadParameter(f"--policy {policy!r}: one of {', '.join(POLICIES)}")
    settings = Settings()
    path = resolve(settings.model_registry, model or settings.model)
    card = read_card(path)
    if head not in {t["name"] for t in card["tasks"]}:
        raise typer.BadParameter(f"model {card.get('name')} has no head {head!r}; its heads: "
                                 f"{', '.join(t['name'] for t in card['tasks'])}")
    try:
        training, derived = card_training_prior(card, head, settings.datasets_dir)
        entry = state(card, head, policy, training, derived, _shares(prior) if prior else None)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if record:
        card["decision"] = {**(card.get("decision") or {}), head: entry}
        write_card(path, card)
    if as_json:
        print(json.dumps(entry, indent=2, ensure_ascii=False))
        return
    out = Console(highlight=False)
    fmt = ", ".join
    out.print(f"{card['name']}:{card.get('version')} {head}: training prior "
              f"{fmt(f'{k} {v:.3f}' for k, v in training.items())} (draw shares "
              f"{fmt(f'{d} {s}' for d, s in derived['draw_shares'].items())}; class-weighted loss: "
              f"{loss_weighting(derived['class_weighted'])})", soft_wrap=True)
    out.print(f"policy {policy}: decides under {fmt(f'{k} {v:.3f}' for k, v in entry['target_prior'].items())}; "
              f"logit offset {fmt(f'{k} {v:+.4f}' for k, v in entry['logit_offset'].items())}", soft_wrap=True)
    if record:
        out.print(f"recorded in {path / 'model.json'}")
