"""``towpath check``: every configured layer's round trip, and its ROUTING."""

from __future__ import annotations

import os
import sys

import click

from towpath.cli.base import STARTUP_ERRORS, main, startup_failure
from towpath.config import configure_layers, load_settings


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
    from towpath.probe import check_layers

    if os.getcwd() not in sys.path:  # ROUTING imports from the project root, as in runworker
        sys.path.insert(0, os.getcwd())
    try:
        loaded = load_settings(settings, embedded=True)
        layers = configure_layers(loaded)
    except STARTUP_ERRORS as exc:
        raise startup_failure(exc) from None
    failed = False
    for report in check_layers(layers, loaded.channel_layers, timeout=timeout):
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
