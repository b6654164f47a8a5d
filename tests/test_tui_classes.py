"""termchat's widgets and screens extend Textual's without hiding any of its attributes."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
from textual.dom import DOMNode
from textual.reactive import Reactive

import termchat.tui


def _classes() -> list[type[DOMNode]]:
    found: list[type[DOMNode]] = []
    for info in pkgutil.iter_modules(termchat.tui.__path__, "termchat.tui."):
        module = importlib.import_module(info.name)
        found += [cls for _, cls in inspect.getmembers(module, inspect.isclass)
                  if issubclass(cls, DOMNode) and cls.__module__ == module.__name__]
    return found


@pytest.mark.parametrize("cls", _classes(), ids=lambda cls: cls.__qualname__)
def test_no_textual_reactive_or_attribute_is_shadowed(cls: type[DOMNode]) -> None:
    textual_bases = [base for base in cls.__mro__[1:] if base.__module__.startswith("textual")]
    for name, value in vars(cls).items():
        for base in textual_bases:
            inherited = base.__dict__.get(name)
            if inherited is None:
                continue
            # A reactive turned into a method (as `ConversationView.expand` once hid
            # `Widget.expand`) is read by Textual's layout as always true.
            assert not isinstance(inherited, Reactive) or isinstance(value, Reactive), \
                f"{cls.__qualname__}.{name} hides {base.__qualname__}.{name}, a reactive"
            # A method overrides a method, and a plain attribute a plain attribute.
            assert callable(inherited) == callable(value) or isinstance(inherited, property), \
                f"{cls.__qualname__}.{name} hides {base.__qualname__}.{name}"
            break
