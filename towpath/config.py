"""Settings: where they come from, what they may hold, and the objects built from them.

A settings module is a plain Python module (``--settings myproject.settings`` or the
``TOWPATH_SETTINGS`` environment variable; a path to a ``.py`` file works too) holding::

    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "towpath.layers.redis.RedisChannelLayer",
            "CONFIG": {"hosts": ["redis://127.0.0.1:6379"]},
            "ROUTING": "myproject.routing:channel_routing",
        },
    }

Every key is checked when the settings load, not when the first message flows: an unknown key
is an error that names it and suggests the nearest real one. This is the only module that reads
the environment for settings; everything else receives the objects built here.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib
import importlib.util
import inspect
import logging
import os
import sys
import sysconfig
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType, ModuleType, TracebackType
from typing import Any

from towpath.layers.base import BaseChannelLayer, InvalidChannelLayerError
from towpath.layers.registry import register_channel_layer

__all__ = [
    "EMBEDDED_CHANNEL_LAYERS",
    "SETTINGS_ENV",
    "ImportFromStringError",
    "LayerSettings",
    "Settings",
    "UserCodeError",
    "build_layer",
    "configure_layers",
    "import_from_string",
    "load_settings",
    "parse_channel_layers",
    "project_on_path",
    "user_code_location",
]

logger = logging.getLogger("towpath")

#: Names the IPC layer's prefix when no settings are given (the embedded default).
IPC_PREFIX_ENV = "TOWPATH_IPC_PREFIX"

#: The environment variable naming the settings module when ``--settings`` is not given.
SETTINGS_ENV = "TOWPATH_SETTINGS"

_LAYER_KEYS = ("BACKEND", "CONFIG", "ROUTING")


class ImportFromStringError(ImportError):
    """``module:attr`` or ``module.attr`` could not be imported; says which and why."""


class UserCodeError(ImportFromStringError):
    """Importing the user's own code (a settings module, an app, a route list) raised.

    The message says what went wrong where, and what was being loaded::

        ModuleNotFoundError in /srv/mysite/settings.py, line 3: No module named 'redis'
        (loading the settings module 'mysite.settings')

    The file and line are those of the last traceback frame in the user's code (not in the
    standard library, an installed package or towpath), so a failing ``import`` names the line
    that imports. The original exception is ``error`` (and ``__cause__``).
    """

    def __init__(self, loading: str, error: BaseException, *, target: str | None = None) -> None:
        self.loading = loading
        self.error = error
        #: the import string whose loading failed, when it was one
        self.target = target
        where = user_code_location(error)
        self.filename = where[0] if where else None
        self.lineno = where[1] if where else None
        place = f" in {where[0]}, line {where[1]}" if where else ""
        text = error.msg if isinstance(error, SyntaxError) else str(error)
        super().__init__(f"{type(error).__name__}{place}: {text} (loading {loading})")

    def relabel(self, loading: str) -> UserCodeError:
        """The same failure, saying it happened while loading ``loading``."""
        relabelled = UserCodeError(loading, self.error, target=self.target)
        relabelled.__cause__ = self.error
        return relabelled


def project_on_path() -> None:
    """Apps, routing and settings import from the working directory (the project root), as
    ``python -m`` would find them: it goes first on ``sys.path`` if it is not there."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def _library_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {
        paths[name] for name in ("stdlib", "platstdlib", "purelib", "platlib") if name in paths
    }
    roots.add(os.path.dirname(os.path.abspath(__file__)))  # towpath itself
    return tuple(os.path.abspath(root) + os.sep for root in roots)


def user_code_location(error: BaseException) -> tuple[str, int] | None:
    """Where ``error`` happened in the user's code: ``(file, line)`` of a syntax error, else of
    the last traceback frame outside the standard library, installed packages and towpath;
    ``None`` when no frame is the user's."""
    if isinstance(error, SyntaxError) and error.filename:
        return error.filename, error.lineno or 0
    roots = _library_roots()
    found: tuple[str, int] | None = None
    tb: TracebackType | None = error.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if not filename.startswith("<") and not os.path.abspath(filename).startswith(roots):
            found = (filename, tb.tb_lineno)
        tb = tb.tb_next
    return found


def _did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(choices)}"


def _is_missing(exc: ModuleNotFoundError, module_name: str) -> bool:
    """``exc`` says that ``module_name`` itself (or a package above it) does not exist, as
    opposed to a module that ``module_name`` imports."""
    return exc.name is not None and (
        module_name == exc.name or module_name.startswith(exc.name + ".")
    )


def _looks_asgi(value: object) -> bool:
    """An ASGI 3 application: an ``async def app(scope, receive, send)`` or an instance whose
    ``__call__`` is one (Starlette, FastAPI, Django's ASGIHandler, a consumer's ``as_asgi()``)."""
    if isinstance(value, type):
        return False
    if inspect.iscoroutinefunction(value):
        return True
    return callable(value) and inspect.iscoroutinefunction(value.__call__)


def _as_module(path: str, loading: str) -> str | None:
    """When the dotted ``path`` names a module: the hint that says how to name an app in it."""
    try:
        spec = importlib.util.find_spec(path)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    try:
        module = importlib.import_module(path)
    except UserCodeError:
        raise
    except Exception as exc:
        raise UserCodeError(loading, exc, target=path) from exc
    names = sorted(
        (
            name
            for name, value in vars(module).items()
            if not name.startswith("_") and _looks_asgi(value)
        ),
        key=lambda name: (name not in ("app", "application"), name),
    )
    hint = f'{path!r} is a module: name the object in it as "<module>:<attribute>"'
    return f"{hint}; did you mean {path + ':' + names[0]!r}?" if names else hint


def import_from_string(path: str, *, what: str | None = None) -> Any:
    """Import ``"package.module:attr"`` (or the dotted ``"package.module.attr"``) and return
    the attribute.

    ``what`` names the target in errors (``"the app"``, ``"ROUTING"``). Raises
    ``ImportFromStringError`` when the path names nothing importable (the message says how to
    write it; a dotted path that names a module suggests the ``module:attr`` to use), and
    ``UserCodeError`` (a subclass) when importing the target module raised: a bug in user
    code is reported as such, with its file and line, never disguised as a bad path."""
    if not isinstance(path, str) or not path:
        raise ImportFromStringError(f"Import string must be a non-empty str, not {path!r}")
    loading = f"{what} {path!r}" if what else repr(path)
    module_name, sep, attrs = path.partition(":")
    if not sep:
        module_name, _, attrs = path.rpartition(".")
    if not module_name or not attrs:
        raise ImportFromStringError(
            f'Import string {path!r} must be in format "<module>:<attribute>" '
            'or "<module>.<attribute>"'
        )
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if not _is_missing(exc, module_name):
            raise UserCodeError(loading, exc, target=path) from exc
        form = "" if sep else '; write it as "<module>:<attribute>"'
        raise ImportFromStringError(
            f"Could not import module {module_name!r} (from {path!r}): {exc}{form}"
        ) from exc
    except UserCodeError:
        raise
    except Exception as exc:
        raise UserCodeError(loading, exc, target=path) from exc
    for position, attr in enumerate(attrs.split(".")):
        try:
            target = getattr(target, attr)
        except AttributeError:
            # ``a.b.c`` or ``a.b:c`` where ``a.b.c`` is a module (not imported by ``a.b``)
            missing = f"Attribute {attr!r} not found in {module_name!r} (from {path!r})"
            hint = _as_module(f"{module_name}.{attr}", loading) if position == 0 else None
            if hint is not None:
                raise ImportFromStringError(f"{missing}; {hint}" if sep else hint) from None
            form = "" if sep else '; write it as "<module>:<attribute>"'
            raise ImportFromStringError(f"{missing}{form}") from None
    return target


@dataclasses.dataclass(frozen=True, slots=True)
class LayerSettings:
    """One ``CHANNEL_LAYERS`` entry, checked."""

    alias: str
    backend: str
    config: Mapping[str, Any] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    routing: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Everything a settings module configures."""

    channel_layers: Mapping[str, LayerSettings]
    source: str | None = None

    def layer(self, alias: str) -> LayerSettings:
        """The settings of the layer ``alias``; the error names the aliases that exist."""
        try:
            return self.channel_layers[alias]
        except KeyError:
            known = ", ".join(self.channel_layers) or "none"
            where = f" in {self.source}" if self.source else ""
            raise InvalidChannelLayerError(
                f"CHANNEL_LAYERS{where} has no {alias!r} entry; configured: {known}"
            ) from None


def parse_channel_layers(channel_layers: object, source: str | None = None) -> Settings:
    """Check a ``CHANNEL_LAYERS`` mapping and return typed ``Settings``."""
    where = f" in {source}" if source else ""
    if not isinstance(channel_layers, Mapping):
        raise InvalidChannelLayerError(
            f"CHANNEL_LAYERS{where} must be a dict of alias -> "
            f'{{"BACKEND": ..., "CONFIG": {{...}}}}, not {type(channel_layers).__name__}'
        )
    parsed: dict[str, LayerSettings] = {}
    for alias, entry in channel_layers.items():
        label = f"CHANNEL_LAYERS[{alias!r}]{where}"
        if not isinstance(alias, str) or not alias:
            raise InvalidChannelLayerError(f"{label}: an alias must be a non-empty str")
        if not isinstance(entry, Mapping):
            raise InvalidChannelLayerError(f"{label} must be a dict, not {entry!r:.60}")
        for key in entry:
            if key not in _LAYER_KEYS:
                raise InvalidChannelLayerError(
                    f"{label} has unknown key {key!r}{_did_you_mean(str(key), _LAYER_KEYS)}"
                )
        backend = entry.get("BACKEND")
        if not isinstance(backend, str) or not backend:
            raise InvalidChannelLayerError(
                f"{label} has no BACKEND; set it to a layer class path such as "
                '"towpath.layers.InMemoryChannelLayer"'
            )
        config = entry.get("CONFIG", {})
        if not isinstance(config, Mapping):
            raise InvalidChannelLayerError(f"{label}: CONFIG must be a dict, not {config!r:.60}")
        routing = entry.get("ROUTING")
        if routing is not None and not isinstance(routing, str):
            raise InvalidChannelLayerError(
                f'{label}: ROUTING must be a "module:attr" string, not {routing!r:.60}'
            )
        parsed[alias] = LayerSettings(alias, backend, MappingProxyType(dict(config)), routing)
    return Settings(MappingProxyType(parsed), source)


def _import_settings_module(name: str) -> ModuleType:
    loading = f"the settings module {name!r}"
    if name.endswith(".py") or os.sep in name:
        path = Path(name)
        if not path.is_file():
            raise InvalidChannelLayerError(f"Settings file {name!r} does not exist")
        spec = importlib.util.spec_from_file_location(f"_towpath_settings_{path.stem}", path)
        if spec is None or spec.loader is None:  # pragma: no cover - not a Python file
            raise InvalidChannelLayerError(f"Settings file {name!r} is not a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[spec.name]
            if isinstance(exc, UserCodeError):
                raise
            raise UserCodeError(loading, exc) from exc
        return module
    project_on_path()  # as for `towpath serve APP` and routing
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if not _is_missing(exc, name):
            raise UserCodeError(loading, exc) from exc
        raise InvalidChannelLayerError(
            f"Settings module {name!r} could not be imported ({exc}); check --settings or "
            f"{SETTINGS_ENV}, and that its folder is on PYTHONPATH"
        ) from exc
    except UserCodeError:
        raise
    except Exception as exc:
        raise UserCodeError(loading, exc) from exc


#: what ``towpath serve`` and ``towpath runworker`` use with no settings at all: the IPC layer,
#: for an interface server and its workers on one machine, with no Redis (``docs/ipc.md``);
#: its prefix comes from ``TOWPATH_IPC_PREFIX`` (default ``towpath``)
EMBEDDED_CHANNEL_LAYERS: dict[str, Any] = {
    "default": {"BACKEND": "towpath.layers.ipc.IPCChannelLayer", "CONFIG": {}}
}


def load_settings(
    module: str | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    embedded: bool = False,
) -> Settings:
    """Load settings from ``module`` (a dotted module name or a ``.py`` path) or, when it is
    ``None``, from the module ``TOWPATH_SETTINGS`` names; with neither, ``embedded`` gives
    ``EMBEDDED_CHANNEL_LAYERS`` (the IPC layer: processes on this machine, no server)."""
    env = os.environ if environ is None else environ
    if module is None:
        module = env.get(SETTINGS_ENV) or None
    if module is None:
        if embedded:
            layers = copy.deepcopy(EMBEDDED_CHANNEL_LAYERS)
            prefix = env.get(IPC_PREFIX_ENV) or "towpath"
            layers["default"]["CONFIG"]["prefix"] = prefix
            logger.info(
                "No --settings: the IPC layer (processes on this machine), prefix %r (%s)",
                prefix,
                IPC_PREFIX_ENV,
            )
            return parse_channel_layers(layers, source="the embedded default")
        raise InvalidChannelLayerError(
            f"No settings given: pass --settings <module> or set {SETTINGS_ENV}"
        )
    loaded = _import_settings_module(module)
    if not hasattr(loaded, "CHANNEL_LAYERS"):
        raise InvalidChannelLayerError(
            f"Settings module {module!r} defines no CHANNEL_LAYERS; add "
            'CHANNEL_LAYERS = {"default": {"BACKEND": "towpath.layers.InMemoryChannelLayer"}}'
        )
    return parse_channel_layers(loaded.CHANNEL_LAYERS, source=module)


def build_layer(layer: LayerSettings) -> BaseChannelLayer:
    """Import the layer's BACKEND and instantiate it with its CONFIG."""
    label = f"Channel layer {layer.alias!r}"
    try:
        backend = import_from_string(layer.backend)
    except ImportError as exc:
        raise InvalidChannelLayerError(
            f"{label}: BACKEND {layer.backend!r} could not be imported: {exc}"
        ) from exc
    if not callable(backend):
        raise InvalidChannelLayerError(
            f"{label}: BACKEND {layer.backend!r} is not a class: {backend!r:.60}"
        )
    try:
        parameters = inspect.signature(backend).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without signatures
        parameters = MappingProxyType({})
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    if parameters and not takes_any:
        names = tuple(n for n, p in parameters.items() if p.kind is not p.VAR_POSITIONAL)
        for option in layer.config:
            if option not in names:
                raise InvalidChannelLayerError(
                    f"{label}: CONFIG option {option!r} is not accepted by "
                    f"{layer.backend}{_did_you_mean(option, names)}"
                )
    try:
        instance = backend(**layer.config)
    except InvalidChannelLayerError as exc:
        raise InvalidChannelLayerError(f"{label}: {exc}") from exc
    except Exception as exc:  # a third-party or user layer class that checks its own way
        where = user_code_location(exc)
        place = f" in {where[0]}, line {where[1]}" if where else ""
        raise InvalidChannelLayerError(
            f"{label}: {layer.backend}(**CONFIG) raised {type(exc).__name__}{place}: {exc}"
        ) from exc
    if not hasattr(instance, "send") or not hasattr(instance, "receive"):
        raise InvalidChannelLayerError(
            f"{label}: BACKEND {layer.backend!r} made {instance!r:.60}, which is not a channel "
            "layer (it has no send/receive)"
        )
    result: BaseChannelLayer = instance
    return result


def configure_layers(settings: Settings) -> dict[str, BaseChannelLayer]:
    """Build every configured layer and register it under its alias."""
    built = {alias: build_layer(entry) for alias, entry in settings.channel_layers.items()}
    for alias, layer in built.items():
        register_channel_layer(alias, layer)
    return built
