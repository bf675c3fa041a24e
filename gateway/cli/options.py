"""Options of a command with actions, accepted before the action and after it.

``gateway queue --data-dir D list`` and ``gateway queue list --data-dir D`` mean the same, as with git,
kubectl and docker. A command declares its shared options once with :func:`option` and makes its actions
with :class:`Actions`: each shared option is added to the command's parser (with its real default) and to
every action's parser with ``default=SUPPRESS``, so an action sets it only when it is given there. Where it
is given in both places, the one after the action wins (argparse copies the action's values over the
command's).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Actions", "Option", "option"]


@dataclass(frozen=True)
class Option:
    """One shared option: its flags and the keyword arguments of ``add_argument``."""

    flags: tuple[str, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)


def option(*flags: str, **kwargs: Any) -> Option:
    """A shared option, declared as for ``ArgumentParser.add_argument``."""
    return Option(flags, kwargs)


class Actions:
    """The actions of ``parser`` (``gateway queue list``, ``gateway pki init``), each accepting ``shared``."""

    def __init__(self, parser: argparse.ArgumentParser, shared: Sequence[Option], *, dest: str = "action") -> None:
        self._shared = tuple(shared)
        for opt in self._shared:
            parser.add_argument(*opt.flags, **opt.kwargs)
        self._actions = parser.add_subparsers(dest=dest, required=True, metavar="ACTION")

    def add(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        """A new action parser, with every shared option already on it."""
        action: argparse.ArgumentParser = self._actions.add_parser(name, **kwargs)
        for opt in self._shared:
            kw = dict(opt.kwargs)
            default = kw.get("default")
            if isinstance(kw.get("help"), str):  # the action level's own default is SUPPRESS: show the real one
                kw["help"] = kw["help"].replace("%(default)s", str(default))
            kw["default"] = argparse.SUPPRESS
            action.add_argument(*opt.flags, **kw)
        return action
