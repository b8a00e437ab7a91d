"""``towpath check``: every configured layer's round trip, and its ROUTING."""

from __future__ import annotations

import click

from towpath.cli.base import STARTUP_ERRORS, main, startup_failure


@main.command()
@click.option(
    "--settings",
    envvar="TOWPATH_SETTINGS",
    help="Settings module (dotted name or .py path) holding CHANNEL_LAYERS. [default: the IPC "
    "layer, as for serve and runworker]",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    help="Seconds each layer's round trip may take (all layers are checked at once).",
)
def check(settings: str | None, timeout: float) -> None:
    """Load the settings, build every channel layer, send one message through each layer's
    server and receive it back, and load each layer's ROUTING. Prints `<alias>: ok (...)` or
    `<alias>: FAILED <reason>` per layer; exits 1 when one failed."""
    import towpath

    try:
        reports = towpath.check(settings, timeout=timeout)
    except STARTUP_ERRORS as exc:
        raise startup_failure(exc) from None
    failed = False
    for report in reports:
        if report.failure is None:
            trips = ", ".join(f"{s * 1e3:.2f} ms via {where}" for where, s in report.round_trips)
            routing = (
                f"; ROUTING {report.routing!r} loads"
                if report.routing and report.routing_failure is None
                else ""
            )
            click.echo(f"{report.alias}: ok ({report.backend}, round trip {trips}{routing})")
        else:
            click.echo(f"{report.alias}: FAILED {report.failure}", err=True)
        if report.routing_failure is not None:
            click.echo(f"{report.alias}: FAILED {report.routing_failure}", err=True)
        for warning in report.warnings:
            click.echo(f"{report.alias}: warning: {warning}", err=True)
        failed = failed or not report.ok
    if failed:
        raise SystemExit(1)
