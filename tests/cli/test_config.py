"""Settings loading, layer building and the registry: every error names the fix."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from towpath.config import (
    ImportFromStringError,
    LayerSettings,
    UserCodeError,
    build_layer,
    configure_layers,
    import_from_string,
    load_settings,
    parse_channel_layers,
)
from towpath.layers import (
    BaseChannelLayer,
    ChannelLayerNotRegistered,
    InMemoryChannelLayer,
    InvalidChannelLayerError,
    get_channel_layer,
    has_layers,
    register_channel_layer,
    unregister_channel_layer,
)
from towpath.layers.registry import registered_aliases

MEMORY = "towpath.layers.InMemoryChannelLayer"


@pytest.fixture(autouse=True)
def _empty_registry() -> None:
    for alias in registered_aliases():
        unregister_channel_layer(alias)


def test_register_get_unregister() -> None:
    assert not has_layers()
    layer = InMemoryChannelLayer()
    register_channel_layer("default", layer)
    assert has_layers()
    assert get_channel_layer() is layer
    assert unregister_channel_layer("default") is layer
    assert unregister_channel_layer("default") is None
    assert not has_layers()


def test_unknown_alias_names_what_is_registered() -> None:
    register_channel_layer("default", InMemoryChannelLayer())
    register_channel_layer("chat", InMemoryChannelLayer())
    with pytest.raises(ChannelLayerNotRegistered) as caught:
        get_channel_layer("jobs")
    assert "Channel layer 'jobs' is not registered; registered: chat, default" in str(caught.value)
    assert isinstance(caught.value, LookupError)


def test_settings_module_builds_and_registers(tmp_path: Path) -> None:
    settings_file = tmp_path / "mysettings.py"
    settings_file.write_text(
        "CHANNEL_LAYERS = {\n"
        f"  'default': {{'BACKEND': '{MEMORY}', 'CONFIG': {{'capacity': 7}}}},\n"
        f"  'chat': {{'BACKEND': '{MEMORY}', 'ROUTING': 'app.routing:routes'}},\n"
        "}\n"
    )
    settings = load_settings(str(settings_file))
    assert settings.layer("chat").routing == "app.routing:routes"
    layers = configure_layers(settings)
    assert set(layers) == {"default", "chat"}
    default = get_channel_layer("default")
    assert isinstance(default, InMemoryChannelLayer) and default.capacity == 7


def test_settings_from_environment(tmp_path: Path) -> None:
    settings_file = tmp_path / "envsettings.py"
    settings_file.write_text(f"CHANNEL_LAYERS = {{'default': {{'BACKEND': '{MEMORY}'}}}}\n")
    settings = load_settings(environ={"TOWPATH_SETTINGS": str(settings_file)})
    assert list(settings.channel_layers) == ["default"]


def test_no_settings_says_how_to_give_them() -> None:
    with pytest.raises(InvalidChannelLayerError, match="--settings .*TOWPATH_SETTINGS"):
        load_settings(environ={})


def test_settings_without_channel_layers(tmp_path: Path) -> None:
    settings_file = tmp_path / "empty_settings.py"
    settings_file.write_text("DEBUG = True\n")
    with pytest.raises(InvalidChannelLayerError, match="defines no CHANNEL_LAYERS"):
        load_settings(str(settings_file))


def test_missing_settings_module() -> None:
    with pytest.raises(InvalidChannelLayerError, match="no_such_settings_mod.*PYTHONPATH"):
        load_settings("no_such_settings_mod")


def test_unknown_entry_key_suggests_the_real_one() -> None:
    with pytest.raises(InvalidChannelLayerError, match="'CONFIGS'.*did you mean 'CONFIG'"):
        parse_channel_layers({"default": {"BACKEND": MEMORY, "CONFIGS": {}}})


def test_missing_backend() -> None:
    with pytest.raises(InvalidChannelLayerError, match=r"\['default'\] has no BACKEND"):
        parse_channel_layers({"default": {"CONFIG": {}}})


def test_unknown_config_option_suggests_the_real_one() -> None:
    entry = LayerSettings("default", MEMORY, {"capacty": 5})
    with pytest.raises(InvalidChannelLayerError, match="'capacty'.*did you mean 'capacity'"):
        build_layer(entry)


def test_bad_config_value_names_the_alias_and_option() -> None:
    entry = LayerSettings("jobs", MEMORY, {"capacity": 0})
    with pytest.raises(InvalidChannelLayerError, match="'jobs'.*capacity must be a positive"):
        build_layer(entry)


def test_backend_that_does_not_import_says_which_and_why() -> None:
    entry = LayerSettings("default", "no_such_pkg.layers.Layer")
    with pytest.raises(InvalidChannelLayerError) as caught:
        build_layer(entry)
    message = str(caught.value)
    assert "'no_such_pkg.layers.Layer'" in message and "No module named 'no_such_pkg'" in message


def test_backend_attribute_missing() -> None:
    entry = LayerSettings("default", "towpath.layers.NoSuchLayer")
    with pytest.raises(InvalidChannelLayerError, match="'NoSuchLayer' not found"):
        build_layer(entry)


def test_backend_that_is_not_a_layer() -> None:
    with pytest.raises(InvalidChannelLayerError, match="not a channel layer"):
        build_layer(LayerSettings("default", "builtins.dict"))


def test_import_from_string_forms() -> None:
    assert import_from_string("towpath.layers:InMemoryChannelLayer") is InMemoryChannelLayer
    assert import_from_string(MEMORY) is InMemoryChannelLayer
    with pytest.raises(ImportFromStringError, match="format"):
        import_from_string("nodots")


def test_import_error_inside_a_module_is_not_disguised(tmp_path: Path) -> None:
    (tmp_path / "broken_mod_xyz.py").write_text("import os\nimport does_not_exist_abc\n")
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(UserCodeError) as caught:
            import_from_string("broken_mod_xyz:thing", what="the app")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("broken_mod_xyz", None)
    assert str(caught.value) == (
        f"ModuleNotFoundError in {tmp_path / 'broken_mod_xyz.py'}, line 2: No module named "
        "'does_not_exist_abc' (loading the app 'broken_mod_xyz:thing')"
    )
    assert isinstance(caught.value.__cause__, ModuleNotFoundError)
    assert caught.value.target == "broken_mod_xyz:thing"


def test_layer_options_are_checked() -> None:
    with pytest.raises(InvalidChannelLayerError, match="expiry"):
        InMemoryChannelLayer(expiry=-1)
    with pytest.raises(InvalidChannelLayerError, match=r"channel_capacity\['x'\]"):
        InMemoryChannelLayer(channel_capacity={"x": 0})
    with pytest.raises(InvalidChannelLayerError, match="glob strings or compiled regexes"):
        InMemoryChannelLayer(channel_capacity={5: 1})  # type: ignore[dict-item]


def test_layers_are_base_channel_layers() -> None:
    assert isinstance(InMemoryChannelLayer(), BaseChannelLayer)


@pytest.fixture
def on_path(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path`` on ``sys.path``; the modules imported from it are forgotten afterwards."""
    import sys

    sys.path.insert(0, str(tmp_path))
    before = set(sys.modules)
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        for name in set(sys.modules) - before:
            del sys.modules[name]


def test_dotted_path_naming_a_module_suggests_module_attr(on_path: Path) -> None:
    package = on_path / "dotted_pkg_q"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "web.py").write_text(
        "class App:\n    async def __call__(self, scope, receive, send): ...\n\n"
        "def helper(): ...\n\nserver = App()\n"
    )
    with pytest.raises(ImportFromStringError) as caught:
        import_from_string("dotted_pkg_q.web")
    assert str(caught.value) == (
        "'dotted_pkg_q.web' is a module: name the object in it as \"<module>:<attribute>\"; "
        "did you mean 'dotted_pkg_q.web:server'?"
    )
    assert import_from_string("dotted_pkg_q.web:server") is not None


def test_dotted_path_to_a_missing_attribute_says_which_form_to_use(on_path: Path) -> None:
    (on_path / "flat_mod_q.py").write_text("thing = 1\n")
    with pytest.raises(ImportFromStringError) as caught:
        import_from_string("flat_mod_q.other")
    assert str(caught.value) == (
        "Attribute 'other' not found in 'flat_mod_q' (from 'flat_mod_q.other'); "
        'write it as "<module>:<attribute>"'
    )


def test_an_exception_at_import_names_the_line_in_user_code(on_path: Path) -> None:
    (on_path / "user_mod_q.py").write_text("import os\n\nvalue = 1 / 0\n")
    with pytest.raises(UserCodeError) as caught:
        import_from_string("user_mod_q:value", what="ROUTING")
    assert str(caught.value) == (
        f"ZeroDivisionError in {on_path / 'user_mod_q.py'}, line 3: division by zero "
        "(loading ROUTING 'user_mod_q:value')"
    )
    assert (caught.value.filename, caught.value.lineno) == (str(on_path / "user_mod_q.py"), 3)
    relabelled = caught.value.relabel("--asgi 'user_mod_q:value'")
    assert str(relabelled).endswith("(loading --asgi 'user_mod_q:value')")
    assert relabelled.__cause__ is caught.value.error


def test_settings_file_with_a_syntax_error(tmp_path: Path) -> None:
    import sys

    path = tmp_path / "syntax_settings.py"
    path.write_text("CHANNEL_LAYERS = {\n")
    with pytest.raises(UserCodeError) as caught:
        load_settings(str(path))
    assert str(caught.value).startswith(f"SyntaxError in {path}, line 1: ")
    assert str(caught.value).endswith(f"(loading the settings module '{path}')")
    assert isinstance(caught.value.error, SyntaxError)
    assert "_towpath_settings_syntax_settings" not in sys.modules


def test_ipc_directory_must_exist(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    entry = LayerSettings(
        "default", "towpath.layers.ipc.IPCChannelLayer", {"directory": str(missing)}
    )
    with pytest.raises(InvalidChannelLayerError, match=r"directory='.*absent' does not exist"):
        build_layer(entry)
    assert not missing.exists()
    (tmp_path / "afile").write_text("")
    entry = LayerSettings(
        "default", "towpath.layers.ipc.IPCChannelLayer", {"directory": str(tmp_path / "afile")}
    )
    with pytest.raises(InvalidChannelLayerError, match="is not a directory"):
        build_layer(entry)


def test_backend_constructor_that_raises_names_the_alias_and_the_line(on_path: Path) -> None:
    (on_path / "own_layer_q.py").write_text(
        "from towpath.layers import InMemoryChannelLayer\n\n"
        "class Layer(InMemoryChannelLayer):\n"
        "    def __init__(self, **config):\n"
        "        raise RuntimeError('no licence key')\n"
    )
    with pytest.raises(InvalidChannelLayerError) as caught:
        build_layer(LayerSettings("jobs", "own_layer_q.Layer"))
    assert str(caught.value) == (
        f"Channel layer 'jobs': own_layer_q.Layer(**CONFIG) raised RuntimeError in "
        f"{on_path / 'own_layer_q.py'}, line 5: no licence key"
    )
