"""The two lanes: a test is `slow` because of what it uses, never because someone said so.

At collection, each test is read the way tests/test_seams.py reads a stage: the code of the
test, of every fixture it requests and of every function they call in this repo (tests/,
hotdog/, stages/, flows/, benchmarks/), followed through names and attributes. If that code
reaches something that starts a process, a server or a browser, or trains a network, the
test is marked slow, and the mark says which. `make test-fast` leaves those out.

What a reading cannot follow (a method of an object made at run time), a guard catches: a
test not marked slow that starts a process, listens on a socket or trains fails at once,
naming what it did. So the fast lane cannot drift into starting processes.
"""

from __future__ import annotations

import builtins
import dis
import functools
import importlib
import inspect
import multiprocessing.process
import os
import socket
import socketserver
import subprocess
import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OWN = ("hotdog", "stages", "flows", "benchmarks")  # packages whose code is read through
TESTS = Path(__file__).resolve().parent

# Modules whose functions and classes start processes: what they are, in the mark's words.
PROCESSES = ("subprocess", "multiprocessing", "concurrent.futures.process", "pty",
             "torch.multiprocessing", "torch.distributed.elastic", "torch.distributed.launcher")
SERVERS = ("uvicorn",)
BROWSERS = ("playwright",)
TRAINING = ("hotdog.training.train.train",)  # a whole training run, however small
# Fixtures from outside this repo, whose code is not read: what they start.
FIXTURES = {"pytester": "a pytest run in a subprocess"}


def what_it_starts(obj: object) -> str | None:
    """Why using `obj` makes a test slow, in a few words; None if it does not by itself."""
    if isinstance(getattr(obj, "refuses", None), str):  # the guard's stand-in, while a fast test runs
        return obj.refuses
    if isinstance(obj, type) and issubclass(obj, socketserver.BaseServer):
        return "a server"
    name = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", None)
    if not isinstance(name, str):
        return None
    qualified = f"{name}.{getattr(obj, '__qualname__', '')}"
    for prefixes, words in ((PROCESSES, "a subprocess"), (SERVERS, "a server"), (BROWSERS, "a browser")):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return words
    return "a training run" if qualified in TRAINING else None


def _own(obj: object) -> bool:
    """Code of this repo (the library, entry points, benchmarks or tests), which is read through."""
    code = getattr(obj, "__code__", None)
    if code is not None:
        file = Path(code.co_filename).resolve()
        # Not this reading itself, nor the limits: they name processes to find and end them.
        return file.is_relative_to(REPO) and ".venv" not in file.parts and file.stem not in ("lanes", "limits")
    module = getattr(obj, "__module__", None) or ""
    return isinstance(obj, type) and (module.split(".")[0] in OWN or _is_test_module(module))


def _is_test_module(module: str) -> bool:
    found = importlib.import_module(module) if module else None
    file = getattr(found, "__file__", None)
    return file is not None and Path(file).resolve().parent == TESTS


def _codes(code: types.CodeType):
    """A code object and every one nested in it (lambdas, inner functions, comprehensions)."""
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


def _referenced(func: types.FunctionType):
    """The objects a function's code names: globals, locals bound by an import, their
    attributes (a.b.c), and the modules it imports."""
    scope = {**vars(builtins), **func.__globals__}
    for code in _codes(func.__code__):
        local: dict[str, object] = {}
        current: object = None
        module: object = None
        for ins in dis.get_instructions(code):
            op = ins.opname
            if op == "LOAD_GLOBAL":
                current = scope.get(ins.argval)
            elif op in ("LOAD_FAST", "LOAD_DEREF", "LOAD_NAME"):
                current = local.get(ins.argval)
            elif op in ("LOAD_ATTR", "LOAD_METHOD"):
                current = None if current is None else _attribute(current, ins.argval)
            elif op == "IMPORT_NAME":
                module = current = _import(ins.argval)
            elif op == "IMPORT_FROM":
                current = None if module is None else _attribute(module, ins.argval)
            elif op in ("STORE_FAST", "STORE_DEREF", "STORE_NAME"):
                if current is not None:
                    local[ins.argval] = current  # `from stages import decode`, then decode.main()
                current = None
                continue
            else:
                current = None
                continue
            if current is not None:
                yield current


def _attribute(obj: object, name: str) -> object:
    found = inspect.getattr_static(obj, name, None)
    if found is None and isinstance(obj, types.ModuleType):  # a submodule not yet imported
        found = _import(f"{obj.__name__}.{name}")
    return found.__func__ if isinstance(found, (staticmethod, classmethod)) else found


def _import(name: str) -> object:
    try:
        return importlib.import_module(name)
    except Exception:
        return None


@functools.cache
def _reason_cached(obj: object) -> str | None:
    return _reason(obj, set())


def reason(obj: object) -> str | None:
    """Why calling `obj` makes a test slow, with the path that leads there; None if nothing does."""
    try:
        return _reason_cached(obj)  # read once: many tests share fixtures and helpers
    except TypeError:  # unhashable
        return _reason(obj, set())


def _reason(obj: object, seen: set[int]) -> str | None:
    if id(obj) in seen:
        return None
    seen.add(id(obj))
    direct = what_it_starts(obj)
    if direct is not None:
        return direct
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    if isinstance(obj, functools.partial):
        obj = obj.func
    if callable(obj) and hasattr(obj, "__wrapped__"):  # @contextmanager, functools.wraps
        obj = inspect.unwrap(obj)
    if isinstance(obj, types.FunctionType) and _own(obj):
        for used in _referenced(obj):
            if used is not None and (found := _reason(used, seen)):
                return f"{found} (through {obj.__qualname__})"
    elif isinstance(obj, type) and _own(obj):
        for base in obj.__mro__[1:]:
            if (found := what_it_starts(base)) is not None:
                return found
        for member in vars(obj).values():
            if isinstance(member, (types.FunctionType, staticmethod, classmethod)) and (found := _reason(member, seen)):
                return found
    elif isinstance(obj, types.ModuleType) and obj.__name__.split(".")[0] in OWN:
        return None  # a module is used through its functions, which are read one by one
    return None


def slow_reason(item: pytest.Item) -> str | None:
    """Why a collected test is slow: what its own code or one of its fixtures reaches."""
    function = getattr(item, "function", None)
    if function is not None and (found := reason(function)):
        return found
    info = getattr(item, "_fixtureinfo", None)
    for name in (info.names_closure if info else []):
        if name in FIXTURES:
            return f"{FIXTURES[name]} (fixture {name})"
        for definition in info.name2fixturedefs.get(name, ()):
            if _own(definition.func) and (found := reason(definition.func)):
                return f"{found} (fixture {name})"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        why = slow_reason(item)
        if why is not None:
            item.add_marker(pytest.mark.slow(reason=why))


# ---------------------------------------------------------------- the guard


class Unmarked(Exception):
    """A test outside the slow lane started what only slow tests may."""


def _refuse(what: str):
    def refuse(*args, **kwargs):
        raise Unmarked(f"this test is not marked slow, yet it starts {what}; tests/lanes.py did not see "
                       f"it in the test's code: reach it through a fixture or helper the reading follows")
    refuse.refuses = what
    return refuse


@pytest.fixture(autouse=True)
def _fast_lane_guard(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """In a test not marked slow: no process, no listening socket, no training run."""
    if request.node.get_closest_marker("slow") is not None:
        yield
        return
    with monkeypatch.context() as m:
        m.setattr(subprocess.Popen, "_execute_child", _refuse("a subprocess"))
        m.setattr(os, "fork", _refuse("a process (fork)"))
        m.setattr(multiprocessing.process.BaseProcess, "start", _refuse("a process (multiprocessing)"))
        m.setattr(socket.socket, "listen", _refuse("a server (a listening socket)"))
        # stages._training imports the function where it trains, so it finds the stand-in too.
        module = sys.modules.get("hotdog.training.train")  # not imported here: importing torch starts ldconfig
        if module is not None:
            m.setattr(module, "train", _refuse("a training run"))
        yield
