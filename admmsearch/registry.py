"""Name -> factory registries, so configs can name models, datasets and constraint kinds; and
the import of user code named as ``module:function`` or ``path/file.py:function``."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Generic, TypeVar

from .errors import RegistryError, quote

__all__ = ["Registry", "add_search_dir", "import_object", "one_line", "search_dirs"]

T = TypeVar("T")
_SEARCH_DIRS: list[Path] = []


class Registry(Generic[T]):
    """A small map from name to factory; unknown names raise an error that lists the known ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering ``fn`` under ``name``."""

        def decorate(fn: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {quote(name)} is registered twice")
            self._factories[name] = fn
            return fn

        return decorate

    def get(self, name: str) -> Callable[..., T]:
        """Return the factory for ``name`` or raise RegistryError listing the valid names."""
        try:
            return self._factories[name]
        except KeyError:
            known = ", ".join(sorted(self._factories))
            raise RegistryError(f"unknown {self.kind} {quote(name)}; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def add_search_dir(folder: str | Path) -> None:
    """Look for user code in ``folder`` too (the folder of a study or settings file just read).

    Folders are searched in the order they were added, after ``sys.path`` and before the
    current folder.
    """
    folder = Path(folder).resolve()
    if folder not in _SEARCH_DIRS:
        _SEARCH_DIRS.append(folder)


def search_dirs() -> list[Path]:
    """Where user code is looked for after ``sys.path``: the folders of the study and settings
    files read so far, then the current folder."""
    return list(dict.fromkeys([*_SEARCH_DIRS, Path.cwd().resolve()]))


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message``, for an exception raised by user code."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def import_object(path: str, what: str) -> object:
    """Import user code: ``module:attribute`` (``mypkg.nets:build``) or ``file.py:attribute``.

    A module is looked for on ``sys.path``, then in :func:`search_dirs` (the study file's
    folder, then the current folder); a relative ``.py`` path is taken from those folders, in the
    same order. Whatever importing raises (a missing module, a syntax error, an exception in the
    module's own code) becomes one line naming ``what``, the path and the reason.

    Raises:
        RegistryError: a malformed path, a module or file that cannot be found or imported, or
            no such attribute.
    """
    module_name, sep, attr = path.rpartition(":")
    if not sep or not module_name or not attr:
        raise RegistryError(
            f"{what} {quote(path)} must look like 'package.module:function' or "
            "'path/file.py:function'"
        )
    if module_name.endswith(".py"):
        module = _import_file(path, module_name, what)
    else:
        module = _import_module(path, module_name, what)
    obj: object = module
    try:
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise RegistryError(
            f"{what} {quote(path)}: {quote(module_name)} has no {quote(attr)}"
        ) from None
    return obj


def _looked_in() -> str:
    return ", ".join(str(d) for d in search_dirs())


def _import_module(path: str, module_name: str, what: str) -> ModuleType:
    """``module_name`` from ``sys.path``, else from :func:`search_dirs`."""
    top = module_name.partition(".")[0]
    try:
        on_path = top in sys.modules or importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        on_path = False
    extra = [] if on_path else [str(d) for d in search_dirs()]
    sys.path[:0] = extra
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise RegistryError(
                f"{what} {quote(path)}: no module named {quote(exc.name)} on the Python path or "
                f"in {_looked_in()}"
            ) from None
        raise RegistryError(f"{what} {quote(path)}: importing it failed: {one_line(exc)}") from exc
    except Exception as exc:  # noqa: BLE001 - user code: any failure is named in one line
        raise RegistryError(f"{what} {quote(path)}: importing it failed: {one_line(exc)}") from exc
    finally:
        del sys.path[: len(extra)]


def _import_file(path: str, file: str, what: str) -> ModuleType:
    """The module in ``file`` (absolute, or relative to one of :func:`search_dirs`), loaded once
    under a private name; its own folder is on ``sys.path`` while it loads."""
    given = Path(file).expanduser()
    candidates = [given] if given.is_absolute() else [d / given for d in search_dirs()]
    found = next((c.resolve() for c in candidates if c.is_file()), None)
    if found is None:
        where = "" if given.is_absolute() else f" in {_looked_in()}"
        raise RegistryError(f"{what} {quote(path)}: no file {quote(file)}{where}")
    digest = hashlib.sha256(str(found).encode()).hexdigest()[:12]
    name = f"_admmsearch_user_{found.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, found)
    if spec is None or spec.loader is None:
        raise RegistryError(f"{what} {quote(path)}: {found} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(found.parent))
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - user code: any failure is named in one line
        del sys.modules[name]
        raise RegistryError(f"{what} {quote(path)}: importing it failed: {one_line(exc)}") from exc
    finally:
        sys.path.remove(str(found.parent))
    return module
