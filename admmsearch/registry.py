"""Name -> factory registries, so configs can name models, datasets and constraint kinds."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import RegistryError

__all__ = ["Registry", "import_object"]

T = TypeVar("T")


class Registry(Generic[T]):
    """A small map from name to factory; unknown names raise an error that lists the known ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering ``fn`` under ``name``."""

        def decorate(fn: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = fn
            return fn

        return decorate

    def get(self, name: str) -> Callable[..., T]:
        """Return the factory for ``name`` or raise RegistryError listing the valid names."""
        try:
            return self._factories[name]
        except KeyError:
            known = ", ".join(sorted(self._factories))
            raise RegistryError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def import_object(path: str, what: str) -> object:
    """Import ``module:attribute`` (``mypkg.nets:build``); errors name the path and ``what``."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise RegistryError(f"{what} {path!r} must look like 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RegistryError(
            f"{what} {path!r}: cannot import module {module_name!r} ({exc})"
        ) from exc
    try:
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise RegistryError(f"{what} {path!r}: module {module_name!r} has no {attr!r}") from None
    return obj
