"""One registry per kind of thing (datasets, models, methods, tables); CLI choices come from here."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from ddm.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of entries of one kind, e.g. ``DATASETS['mnist']``.

    Entries are added with the :meth:`register` decorator. A name can also be *declared* with the
    module that registers it (:meth:`declare`): the name is listed at once and the module imported
    on first lookup, so no caller imports a module only for its registration side effect. Looking
    up an unknown name raises an error listing the valid names.
    """

    def __init__(self, kind: str, error: type[Exception] = ConfigError) -> None:
        self.kind = kind
        self._error = error
        self._entries: dict[str, T] = {}
        self._declared: dict[str, str] = {}  # name -> module that registers it when imported

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def declare(self, name: str, module: str) -> None:
        """List ``name`` now; import ``module`` (which registers it) when it is first looked up."""
        if name in self._declared or name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is declared twice")
        self._declared[name] = module

    def __getitem__(self, name: str) -> T:
        if name not in self._entries and name in self._declared:
            importlib.import_module(self._declared[name])
            if name not in self._entries:
                raise ValueError(f"module {self._declared[name]} did not register {self.kind} {name!r}")
        try:
            return self._entries[name]
        except KeyError:
            raise self._error(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._declared

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def names(self) -> list[str]:
        return [*self._declared, *(name for name in self._entries if name not in self._declared)]
