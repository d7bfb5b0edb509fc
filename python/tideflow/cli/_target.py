"""What the commands share: importing ``MODULE:OBJECT`` and building the engine it names on the
store of ``--store`` or ``TIDEFLOW_STORE``."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from tideflow.cli import CommandError, UsageError
from tideflow.engine import Engine
from tideflow.workflow import Workflow

#: The environment variable that names the store when ``--store`` is not given.
STORE_ENV = "TIDEFLOW_STORE"

#: The store URLs a command accepts, for error messages.
STORE_FORMS = (
    "sqlite:///relative.db, sqlite:////absolute.db, postgresql://..., redis://..., mongodb://..."
)


def load_object(spec: str) -> object:
    """Imports ``MODULE:OBJECT`` (``MODULE`` dotted, ``OBJECT`` dotted attributes) with the
    current directory first on ``sys.path``, as ``python -m`` has it; ``UsageError`` otherwise."""
    module_name, sep, attrs = spec.partition(":")
    if not sep or not module_name or not attrs:
        raise UsageError(f"expected MODULE:OBJECT (such as app:engine), got {spec!r}")
    if module_name.endswith(".py") or "/" in module_name or os.sep in module_name:
        raise UsageError(
            f"MODULE is a module's import name (app, or pkg.app for pkg/app.py), not a file "
            f"path: got {module_name!r}"
        )
    cwd = os.getcwd()
    if not sys.path or sys.path[0] not in ("", cwd):
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is not None and (module_name + ".").startswith(e.name + "."):
            raise UsageError(
                f"cannot import module {module_name!r}: no module named {e.name!r} (run the "
                "command from the directory that holds it, or put that on PYTHONPATH)"
            ) from e
        raise UsageError(_import_failure(module_name, e)) from e
    except Exception as e:
        raise UsageError(_import_failure(module_name, e)) from e
    obj: object = module
    done = module_name
    for attr in attrs.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise UsageError(f"{done!r} has no attribute {attr!r} (in {spec!r})") from None
        done = f"{done}:{attr}" if done == module_name else f"{done}.{attr}"
    return obj


def _import_failure(module_name: str, e: BaseException) -> str:
    return (
        f"cannot import module {module_name!r}: {type(e).__name__}: {e} "
        "(--debug shows the traceback)"
    )


def store_url(option: str | None) -> str | None:
    """The store URL to use: ``--store``, else ``TIDEFLOW_STORE`` (if set and not empty), else
    None; a URL of no known form is a ``UsageError``."""
    url = option if option is not None else (os.environ.get(STORE_ENV) or None)
    if url is None:
        return None
    where = "--store" if option is not None else STORE_ENV
    shown = _redacted(url)
    if url in ("memory", "memory://"):
        raise UsageError(
            f"{where} {shown}: an in-memory store is private to one process; a worker needs one "
            f"that other processes share: {STORE_FORMS}"
        )
    scheme, sep, rest = url.partition("://")
    from tideflow.stores import _SCHEMES

    if sep and scheme.lower() == "sqlite":
        path, _, query = rest.partition("?")
        if not path.startswith("/") or len(path) < 2:
            raise UsageError(
                f"{where} {shown}: a SQLite URL is sqlite:///relative.db or sqlite:////absolute.db"
            )
        for part in filter(None, query.split("&")):
            key, _, value = part.partition("=")
            if key != "durability" or value not in ("normal", "full"):
                raise UsageError(
                    f"{where} {shown}: the one SQLite URL option is durability=normal|full"
                )
        return url
    if sep and scheme.lower() in _SCHEMES:
        return url
    raise UsageError(f"{where}: unknown store URL {shown}: use {STORE_FORMS}")


def _redacted(url: str) -> str:
    from tideflow.stores._server import redact

    return repr(redact(url))


def engine_for(obj: object, spec: str, url: str | None) -> Engine:
    """The engine a command runs on for the object ``spec`` named: an ``Engine`` as it is, or
    rebuilt on ``url`` (its clock, observer and workflows kept); a ``Workflow`` or a list or tuple
    of them registered on a new engine on ``url``."""
    if isinstance(obj, Engine):
        workflows = obj.workflows()
        if not workflows:
            raise UsageError(
                f"{spec} is an Engine with no workflow registered: register them when the module "
                "is imported (engine.register(...)), or name the workflows instead"
            )
        if url is None:
            from tideflow.stores import MemoryStore

            if isinstance(obj.store, MemoryStore):
                raise UsageError(
                    f"{spec} runs on the in-memory store, which no other process sees: give "
                    f"--store URL or set {STORE_ENV}"
                )
            return obj
        engine = _open(url, clock=obj.clock, observer=obj.observer)
    else:
        if isinstance(obj, Workflow):
            workflows = [obj]
        elif isinstance(obj, (list, tuple)) and obj and all(isinstance(w, Workflow) for w in obj):
            workflows = list(obj)
        else:
            raise UsageError(
                f"{spec} is {_kind(obj)}, not an Engine, a Workflow or a list of Workflows"
            )
        if url is None:
            raise UsageError(
                f"{spec} names workflows, which need a store: give --store URL or set {STORE_ENV}"
            )
        engine = _open(url)
    try:
        engine.register(*workflows)
    except Exception as e:  # an invalid definition is the target's fault, not the run's
        raise UsageError(f"{spec}: {type(e).__name__}: {e}") from e
    return engine


def _kind(obj: object) -> str:
    if isinstance(obj, (list, tuple)):
        if not obj:
            return f"an empty {type(obj).__name__}"
        bad = next(x for x in obj if not isinstance(x, Workflow))
        return f"a {type(obj).__name__} holding a {type(bad).__name__} ({bad!r:.60})"
    return f"a {type(obj).__name__} ({obj!r:.60})"


def _open(url: str, **kwargs: Any) -> Engine:
    try:
        return Engine(store=url, **kwargs)
    except Exception as e:
        raise CommandError(
            f"cannot open the store {_redacted(url)}: {type(e).__name__}: {e}"
        ) from e
