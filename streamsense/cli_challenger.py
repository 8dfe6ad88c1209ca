"""`streamsense feedback would-alert …`: verdicts on the alerts a shadowed challenger would have raised, and which
challenger the review queue takes them from (streams/feedback/challenger.py)."""

from typing import Optional

import typer

from streamsense.settings import Settings

AUTO, NONE = "auto", "none"


def register(feedback_app: typer.Typer) -> None:
    feedback_app.command("would-alert")(feedback_would_alert)


def challenger_version(settings: Settings, engine, ref: str) -> str | None:
    """The NAME:VERSION whose would-be alerts join the review queue: `auto` the challenger shadowed now (the newest
    shadow rows' version, unless it serves), `none` none, NAME:VERSION as given, NAME:ALIAS through the registry."""
    from streamsense.models.registry import read_card, resolve
    from streamsense.streams.feedback.challenger import newest_shadowed

    if ref == NONE:
        return None
    if ref == AUTO:
        return newest_shadowed(engine)
    name, _, version = ref.partition(":")
    if name and version.isdigit():
        return ref
    card = read_card(resolve(settings.model_registry, ref))  # an unknown one fails with the registry's message
    return f"{card['name']}:{card['version']}"


def feedback_would_alert(
    target: str = typer.Argument(..., help="KIND:ID of the message the challenger would have alerted on (post:123; "
                                           "the review queue's target without its `would_alert:`)."),
    rule: str = typer.Option(..., "--rule", help="The rule it would have fired (the queue's head column)."),
    false_alarm: bool = typer.Option(False, "--false-alarm", help="It should not have been raised."),
    confirmed: bool = typer.Option(False, "--confirmed", help="It would have been a real alarm."),
    by: str = typer.Option(..., "--by", help="Who says so."),
):
    """Mark an alert a shadowed challenger would have raised a false alarm (or confirm it): its alert precision for
    the promotion gate."""
    from streamsense.cli_feedback import _fail, _record
    from streamsense.streams.feedback.challenger import MESSAGE_KINDS, WOULD_ALERT
    from streamsense.streams.feedback.verdicts import Verdict, VerdictError, check

    if false_alarm == confirmed:
        raise typer.BadParameter("give one of --false-alarm or --confirmed")
    ref = target.removeprefix(f"{WOULD_ALERT}:")
    if ref.partition(":")[0] not in MESSAGE_KINDS or not ref.partition(":")[2]:
        _fail(f"{target!r} is not KIND:ID of a message (post:123 or ticket:T-9)",
              "`streamsense feedback queue` lists the would-be alerts to review")
    try:
        verdict = check(Verdict(WOULD_ALERT, ref, rule, by, "wrong" if false_alarm else "right"))
    except VerdictError as exc:
        _fail(str(exc), "see `streamsense feedback would-alert --help`")
    _record([verdict])
