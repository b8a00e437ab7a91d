"""One family of config errors: every config object's error is a ``towpath.errors.ConfigError``
naming the setting in ``field``, and the CLI turns one into the option to blame and exit status 2
from its class and field (never from its message)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from click.testing import CliRunner

from towpath.cli import main
from towpath.cli.base import option_for, usage_error
from towpath.errors import ConfigError
from towpath.fields import option_of
from towpath.interface.config import ServerConfig, ServerConfigError
from towpath.interface.forwarding.settings import ForwardingConfigError, ForwardingSettings
from towpath.interface.server import parse_bind
from towpath.layers.base import InvalidChannelLayerError, LayerOptionError, LayerOptions
from towpath.worker import WorkerConfigError, filter_channels
from towpath.worker.config import WorkerConfig

BAD_SETTINGS: list[tuple[type[Any], dict[str, Any], type[ConfigError], str]] = [
    (ServerConfig, {"port": 70000}, ServerConfigError, "port"),
    (ServerConfig, {"max_header_count": 0}, ServerConfigError, "max_header_count"),
    (ServerConfig, {"max_body_bytes": 0}, ServerConfigError, "max_body_bytes"),
    (ServerConfig, {"h2_resets_per_second": 0}, ServerConfigError, "h2_resets_per_second"),
    (ServerConfig, {"header_timeout_seconds": 0}, ServerConfigError, "header_timeout_seconds"),
    (ServerConfig, {"ws_ping_interval_seconds": -1}, ServerConfigError, "ws_ping_interval_seconds"),
    (ServerConfig, {"ws_output_limit_bytes": 0}, ServerConfigError, "ws_output_limit_bytes"),
    (ServerConfig, {"lifespan": "maybe"}, ServerConfigError, "lifespan"),
    (ServerConfig, {"ssl_keyfile": "k.pem"}, ServerConfigError, "ssl_certfile"),
    (ServerConfig, {"root_path": "api/"}, ServerConfigError, "root_path"),
    (ServerConfig, {"binds": ["a:1"]}, ServerConfigError, "binds"),
    (
        ServerConfig,
        {"ws_allowed_origins": ("https://a/b",)},
        ServerConfigError,
        "ws_allowed_origins",
    ),
    (WorkerConfig, {"concurrency": 0}, WorkerConfigError, "concurrency"),
    (WorkerConfig, {"only_channels": "http.*"}, WorkerConfigError, "only_channels"),
    (WorkerConfig, {"graceful_timeout": 0}, WorkerConfigError, "graceful_timeout"),
    (WorkerConfig, {"handback_timeout": -1}, WorkerConfigError, "handback_timeout"),
    (
        ForwardingSettings,
        {"http_timeout_seconds": 0},
        ForwardingConfigError,
        "http_timeout_seconds",
    ),
    (
        ForwardingSettings,
        {"heartbeat_timeout_seconds": 0},
        ForwardingConfigError,
        "heartbeat_timeout_seconds",
    ),
    (
        ForwardingSettings,
        {"untaken_warning_seconds": -1},
        ForwardingConfigError,
        "untaken_warning_seconds",
    ),
    (ForwardingSettings, {"body_chunk_bytes": 0}, ForwardingConfigError, "body_chunk_bytes"),
    (ForwardingSettings, {"max_body_bytes": -1}, ForwardingConfigError, "max_body_bytes"),
    (LayerOptions, {"capacity": 0}, LayerOptionError, "capacity"),
    (LayerOptions, {"expiry": 0}, LayerOptionError, "expiry"),
    (LayerOptions, {"group_expiry": -1}, LayerOptionError, "group_expiry"),
    (LayerOptions, {"inbox_capacity": 0}, LayerOptionError, "inbox_capacity"),
    (LayerOptions, {"channel_capacity": {"a*": 0}}, LayerOptionError, "channel_capacity"),
]


@pytest.mark.parametrize(("config", "changes", "error", "field"), BAD_SETTINGS)
def test_each_config_error_names_its_field(
    config: type[Any], changes: dict[str, Any], error: type[ConfigError], field: str
) -> None:
    with pytest.raises(error) as caught:
        config(**changes)
    assert isinstance(caught.value, ConfigError) and isinstance(caught.value, ValueError)
    assert caught.value.field == field
    assert field in {f.name for f in dataclasses.fields(config)}


def test_the_old_names_still_catch_what_they_caught() -> None:
    with pytest.raises(InvalidChannelLayerError):  # a layer's misconfiguration, as before
        LayerOptions(capacity=0)
    with pytest.raises(WorkerConfigError) as caught:
        filter_channels(["http.request"], only=["nothing.*"])
    assert caught.value.field == "only_channels"
    with pytest.raises(ServerConfigError) as bind:
        parse_bind("host:port")
    assert bind.value.field == "binds"


@pytest.mark.parametrize(
    ("config", "error"),
    [
        (ServerConfig(), ServerConfigError),
        (WorkerConfig(), WorkerConfigError),
        (ForwardingSettings(), ForwardingConfigError),
    ],
)
def test_an_unknown_setting_names_itself(config: Any, error: type[ConfigError]) -> None:
    with pytest.raises(error, match="unknown .* setting") as caught:
        config.replace(heartbeat_timout=1)
    assert caught.value.field == "heartbeat_timout"


def test_the_cli_maps_the_class_and_field_never_the_message() -> None:
    # the message says nothing of the option; the class and field find it
    assert option_for(ServerConfigError("nonsense", field="max_header_bytes")) == (
        "--max-header-bytes"
    )
    assert (
        option_for(ServerConfigError("x", field="max_websocket_message_bytes")) == "--ws-max-size"
    )
    assert option_for(WorkerConfigError("x", field="layer_alias")) == "--layer"
    assert option_for(ForwardingConfigError("x", field="http_timeout_seconds")) == "--http-timeout"
    # an option the raiser names itself wins; no field, or one with no option, names none
    assert option_for(WorkerConfigError("x", option="--asgi")) == "--asgi"
    assert option_for(WorkerConfigError("x")) is None
    assert option_for(ServerConfigError("x", field="backlog")) is None
    assert option_for(ConfigError("x", field="port")) is None  # no config object to look in
    error = usage_error(ServerConfigError("port must be an int in range", field="port"))
    assert error.exit_code == 2
    assert error.format_message() == "--port: port must be an int in range"


def test_every_option_a_field_names_is_an_option_of_a_command() -> None:
    commands = {"serve": ServerConfig, "runworker": WorkerConfig}
    for name, config in commands.items():
        options = {opt for param in main.commands[name].params for opt in param.opts}
        for field in dataclasses.fields(config):
            option = option_of(config, field.name)
            assert option is None or option in options, (name, field.name, option)
    serve_options = {opt for param in main.commands["serve"].params for opt in param.opts}
    for field in dataclasses.fields(ForwardingSettings):
        option = option_of(ForwardingSettings, field.name)
        assert option is None or option in serve_options, field.name


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["serve", "m:app", "--root-path", "api/"], "--root-path"),
        (["serve", "m:app", "--ssl-keyfile", "k.pem"], "--ssl-certfile"),
        (["serve", "m:app", "-b", "unix:"], "--bind"),
        (["serve", "m:app", "--ws-allowed-origins", "https://a/b"], "--ws-allowed-origins"),
    ],
)
def test_the_cli_names_the_option_and_exits_2(args: list[str], option: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert f"Error: {option}: " in result.output
    assert "Traceback" not in result.output
