"""``WorkerConfig``: one frozen object holds every worker setting and its default, checked once;
the CLI's options and ``Worker``'s keyword arguments both end in it."""

from __future__ import annotations

import dataclasses
from typing import Any

import click
import pytest

from towpath.cli import main
from towpath.layers.memory import InMemoryChannelLayer
from towpath.routing import route
from towpath.worker import Worker, WorkerConfigError
from towpath.worker.config import WorkerConfig, default_of


async def job(message: dict[str, Any]) -> None:
    pass


ROUTES = [route("jobs", job), route("other", job)]


def test_defaults() -> None:
    config = WorkerConfig()
    assert config == WorkerConfig(
        only_channels=(),
        exclude_channels=(),
        concurrency=100,
        graceful_timeout=30.0,
        layer_alias="default",
        retry_initial=0.1,
        retry_max=5.0,
        heartbeat_interval=1.0,
        handback_timeout=10.0,
    )
    assert default_of(WorkerConfig, "graceful_timeout") == 30.0
    with pytest.raises(WorkerConfigError, match="no setting 'graceful'"):
        default_of(WorkerConfig, "graceful")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"concurrency": 0}, r"concurrency must be an int >= 1, not 0 \(--concurrency N\)"),
        ({"concurrency": 2.0}, r"concurrency must be an int >= 1, not 2.0 \(--concurrency"),
        ({"concurrency": True}, r"concurrency must be an int >= 1, not True"),
        ({"graceful_timeout": 0}, r"graceful_timeout must be > 0, not 0 \(--graceful-timeout"),
        ({"graceful_timeout": float("nan")}, r"graceful_timeout must be > 0, not nan"),
        ({"heartbeat_interval": -1.0}, r"heartbeat_interval must be > 0.*--heartbeat-interval"),
        ({"handback_timeout": 0.0}, r"handback_timeout must be > 0.*--handback-timeout"),
        ({"only_channels": "http.*"}, r"only_channels must be an iterable of str.*--only-chan"),
        ({"exclude_channels": [1]}, r"exclude_channels must be an iterable.*--exclude-channels"),
    ],
)
def test_each_invalid_setting_names_the_field_and_its_option(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(WorkerConfigError, match=message):
        WorkerConfig(**changes)


def test_frozen_and_globs_kept_as_tuples() -> None:
    config = WorkerConfig(only_channels=["http.*"], exclude_channels=iter(["ws.*"]))
    assert config.only_channels == ("http.*",)
    assert config.exclude_channels == ("ws.*",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.concurrency = 5  # type: ignore[misc]


def test_replace_checks_names_and_values() -> None:
    config = WorkerConfig().replace(concurrency=7)
    assert config.concurrency == 7
    with pytest.raises(
        WorkerConfigError, match="unknown worker setting 'concurrence'.*'concurrency'"
    ):
        config.replace(concurrence=3)
    with pytest.raises(WorkerConfigError, match="concurrency must be an int >= 1"):
        config.replace(concurrency=0)


def test_the_worker_takes_a_config_or_keyword_settings() -> None:
    layer = InMemoryChannelLayer()
    config = WorkerConfig(only_channels=("jobs",), concurrency=3, graceful_timeout=2.0)
    worker = Worker(layer, ROUTES, config=config)
    assert worker.config is config
    assert (worker.channels, worker.concurrency, worker.graceful_timeout) == (["jobs"], 3, 2.0)
    # keyword settings replace those of the config (or of the defaults)
    worker = Worker(layer, ROUTES, config=config, concurrency=4)
    assert worker.config == config.replace(concurrency=4)
    assert Worker(layer, ROUTES, heartbeat_interval=0.5).config == WorkerConfig(
        heartbeat_interval=0.5
    )
    with pytest.raises(WorkerConfigError, match="unknown worker setting 'concurency'"):
        Worker(layer, ROUTES, concurency=4)


@pytest.mark.parametrize("command", ["runworker", "runserver"])
def test_the_cli_defaults_are_the_dataclass_defaults(command: str) -> None:
    options = {
        param.name: param
        for param in main.commands[command].params
        if isinstance(param, click.Option) and param.name is not None
    }
    fields = {field.name: field.default for field in dataclasses.fields(WorkerConfig)}
    shared = sorted(set(options) & set(fields))
    assert shared == [
        "concurrency",
        "exclude_channels",
        "graceful_timeout",
        "handback_timeout",
        "heartbeat_interval",
        "only_channels",
    ]
    for name in ("concurrency", "graceful_timeout", "handback_timeout", "heartbeat_interval"):
        assert options[name].default == fields[name], name
