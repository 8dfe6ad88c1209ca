"""`streamsense query`, `streamsense alerts tail` and `streamsense dashboard`: reading what the worker produced."""

import asyncio
import json
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from streamsense.settings import Settings

alerts_app = typer.Typer(help="Alerts: follow the alerts topic, check a rules file.", no_args_is_help=True)
SEVERITY_STYLES = {"critical": "bold white on red", "high": "bold red", "medium": "yellow", "low": "green"}


def register(app: typer.Typer) -> None:
    app.command()(query)
    app.command()(dashboard)
    app.add_typer(alerts_app, name="alerts")


def query(
    name: Optional[str] = typer.Argument(None, help="Report name (see --list)."),
    list_reports: bool = typer.Option(False, "--list", help="List the reports and exit."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array of row objects."),
    limit: Optional[int] = typer.Option(None, min=1, help="At most this many rows (default: the report's)."),
    since: Optional[str] = typer.Option(
        None, help="Only rows at or after this time on the report's time column: event time (the message's "
                   "created_at), except throughput (stored time); see --list. 30m, 2h, 7d or an ISO 8601 time."),
    stored_since: Optional[str] = typer.Option(
        None, "--stored-since", help="Only rows the worker stored at or after this time, whatever their event time "
                                     "(30m, 2h, 7d or an ISO 8601 time)."),
):
    """Run a canned BI report over the SQL store (STREAMSENSE_DATABASE_URL)."""
    from streamsense.streams.bi import REPORTS, catalog, connect, empty_hint, parse_since, run_report

    out = Console()
    if list_reports or name is None:
        if as_json:
            print(json.dumps(catalog(), indent=2))
            return
        table = Table(title="reports (streamsense query NAME)")
        # names and options are what a user types: never wrapped or cut (the description wraps instead)
        table.add_column("name", no_wrap=True, min_width=max(len(r["name"]) for r in catalog()))
        table.add_column("description", ratio=1, overflow="fold")
        table.add_column("--since on", min_width=len("bucket_start"), overflow="fold")
        table.add_column("--stored-since", no_wrap=True, min_width=len("--stored-since"))
        table.add_column("limit", no_wrap=True)
        for r in catalog():
            table.add_row(r["name"], r["description"], r["since_on"] or "", "yes" if r["stored_since"] else "",
                          str(r["limit"] or ""))
        out.print(table)
        out.print("[dim]event time: the message's created_at, else its Kafka timestamp, else when it was stored; "
                  "stored time: when the worker wrote it (docs/bi.md)[/]")
        return
    if name not in REPORTS:
        raise typer.BadParameter(f"unknown report {name!r}; choose one of {', '.join(REPORTS)}", param_hint="NAME")
    windows = {}
    for option, value in (("--since", since), ("--stored-since", stored_since)):
        try:
            windows[option] = parse_since(value) if value else None
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint=option) from None
    engine = connect(Settings().database_url)
    try:
        result = run_report(engine, name, limit=limit, since=windows["--since"], stored_since=windows["--stored-since"])
        hint = empty_hint(engine, name, since, stored_since) if not result.rows and (since or stored_since) else None
    except ValueError as exc:  # a report without that time column
        raise typer.BadParameter(str(exc), param_hint="--stored-since" if "stored_since" in str(exc)
                                 else "--since") from None
    finally:
        engine.dispose()
    if hint:  # on stderr: --json output stays a JSON array
        Console(stderr=True).print(f"[yellow]{escape(hint)}[/]", soft_wrap=True)
    if as_json:
        print(json.dumps(result.records(), indent=2, ensure_ascii=False))
        return
    shown = REPORTS[name].table or result.columns
    table = Table(title=f"{name}: {REPORTS[name].description}", caption="--json shows every column"
                  if len(shown) < len(result.columns) else None)
    records = result.records()
    cells = [[_cell(r[col]) for col in shown] for r in records]
    for i, col in enumerate(shown):
        numeric = any(_is_number(r[col]) for r in records)
        short = all(len(row[i]) <= SHORT_CELL for row in cells)
        table.add_column(col, justify="right" if numeric else "left", no_wrap=short)
    for row in cells:
        table.add_row(*row)
    out.print(table)
    out.print(f"[dim]{len(cells)} rows[/]")


SHORT_CELL = 32  # columns of cells up to this long are never wrapped
LONG_CELL = 120  # text cells are cut here (--json has it all)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cell(value) -> str:
    """A table cell: floats to 3 places, evidence as one line per item, long text cut."""
    if value is None:
        return ""
    if isinstance(value, float):
        text = f"{value:.3f}"
    elif isinstance(value, list):
        text = "\n".join(_short(f"• {e.get('message_id', '')}: {e.get('excerpt', '')}" if isinstance(e, dict)
                                else f"• {e}", 60) for e in value)
    else:
        text = _short(json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else str(value), LONG_CELL)
    return escape(text)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


@alerts_app.command("tail")
def alerts_tail(
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line, as published."),
    from_beginning: bool = typer.Option(False, "--from-beginning", help="Start at the oldest alert, not the newest."),
    max_alerts: Optional[int] = typer.Option(None, "--max", min=1, help="Stop after this many alerts."),
    timeout: Optional[float] = typer.Option(None, help="Stop after this many seconds."),
):
    """Print alerts from the alerts topic as they arrive, until Ctrl-C."""
    settings = Settings()
    out = Console()
    err = Console(stderr=True)
    if not as_json:
        err.print(f"[dim]tailing {settings.topic_alerts} on {settings.kafka_bootstrap_servers} (Ctrl-C to stop)[/]")

    def show(value: bytes | None) -> bool:
        try:
            alert = json.loads(value or b"")
        except ValueError:
            err.print(f"[yellow]skipped a message that is not JSON ({len(value or b'')} bytes)[/]")
            return False
        if not isinstance(alert, dict):
            err.print("[yellow]skipped a message that is not a JSON object[/]")
            return False
        if as_json:
            print(json.dumps(alert, ensure_ascii=False), flush=True)
        else:
            print_alert(out, alert)
        return True

    try:
        shown = asyncio.run(tail(settings, show, from_beginning, max_alerts, timeout))
    except KeyboardInterrupt:
        return
    if not as_json:
        err.print(f"[dim]{shown} alerts[/]")


async def tail(settings: Settings, show, from_beginning: bool, max_alerts: int | None, timeout: float | None) -> int:
    """Feed each message of the alerts topic to `show` (True when it was an alert); returns the alerts shown."""
    from aiokafka import AIOKafkaConsumer

    from streamsense.streams.kafka import client_options

    consumer = AIOKafkaConsumer(settings.topic_alerts, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest" if from_beginning else "latest",
                                **client_options(settings))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout if timeout else None
    shown = 0
    try:
        await consumer.start()  # inside the try: a start that fails still closes the client
        while max_alerts is None or shown < max_alerts:
            wait = 1.0 if deadline is None else min(1.0, deadline - loop.time())
            if wait <= 0:
                break
            remaining = None if max_alerts is None else max_alerts - shown
            batches = await consumer.getmany(timeout_ms=int(wait * 1000), max_records=remaining)
            for records in batches.values():
                shown += sum(show(record.value) for record in records)
    finally:
        await consumer.stop()
    return shown


def print_alert(out: Console, alert: dict) -> None:
    severity = str(alert.get("severity", "?"))
    style = SEVERITY_STYLES.get(severity, "bold")
    out.print(f"[dim]{escape(str(alert.get('created_at', '')))}[/] [{style}] {escape(severity.upper())} [/] "
              f"[bold]{escape(str(alert.get('rule', '')))}[/] [cyan]{escape(str(alert.get('key', '')))}[/]")
    out.print(f"  {escape(str(alert.get('summary', '')))}")
    window = alert.get("window")
    if isinstance(window, dict):
        out.print(f"  [dim]window {escape(str(window.get('start')))} → {escape(str(window.get('end')))}[/]")
    evidence = alert.get("evidence")
    for item in evidence if isinstance(evidence, list) else []:
        if isinstance(item, dict):
            score = item.get("risk_score")
            label = escape(str(item.get("message_id", "")))
            if isinstance(score, (int, float)):
                label += f" ({score:.2f})"
            out.print(f"  [dim]•[/] {label}: [italic]{escape(str(item.get('excerpt', '')))}[/]")


def dashboard(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on; beyond loopback STREAMSENSE_DASHBOARD_TOKEN "
                                               "is required."),
    port: int = typer.Option(8050, help="TCP port."),
):
    """Serve the read-only web dashboard over the SQL store (STREAMSENSE_DATABASE_URL) until Ctrl-C. Beyond loopback
    it requires STREAMSENSE_DASHBOARD_TOKEN (bearer, or basic auth with it as the password)."""
    from streamsense.streams.dashboard import DashboardAccessError, serve

    settings = Settings()
    token = settings.dashboard_token.get_secret_value() if settings.dashboard_token else None
    err = Console(stderr=True)
    try:
        serve(settings.database_url, host, port, log=err.print, token=token)
    except DashboardAccessError as exc:
        err.print(f"error: {escape(str(exc))}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None
