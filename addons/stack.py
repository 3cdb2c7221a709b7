"""Our addons as one entry in mitmproxy's chain, and a hook dispatch that looks each hook's handlers up once.

mitmproxy dispatches every event (`AddonManager.trigger_event`) to every chain entry: per entry a context manager,
a coroutine and two generators walk the entry and its nested `addons`, `getattr` each for the hook and rebuild the
hook's arguments from its dataclass fields, whether the entry handles the hook or not. A new connection fires about
twenty hooks (plus an `update` after each flow hook), so that walk was most of what aigw's addons cost per
connection. `use_hook_cache(master)` makes the master's addon manager remember, per hook name, which callables
handle it (in chain order, nested addons after their parent, as `traverse` yields them) and call just those, each
chain entry still under its own error guard: the same calls in the same order, the same error log ("Addon error:
…") and `AddonHalt` handling as mitmproxy's, without the walk. The cache is rebuilt whenever an addon is added or
removed; addons must not grow or drop hook methods (or nested addons) while registered (none of ours do).
"""

from __future__ import annotations

import inspect
import logging
import sys
import types
from typing import Any

from mitmproxy import exceptions, flow, hooks
from mitmproxy.addonmanager import AddonManager, cut_traceback, traverse
from mitmproxy.master import Master

# mitmproxy's own logger for addon errors, so an error reads (and is filtered) exactly as without the cache.
_addon_log = logging.getLogger("mitmproxy.addonmanager")

_Handlers = tuple[tuple[Any, ...], ...]  # per chain entry that handles the hook: its callables, in order


class AigwAddons:
    def __init__(self, *addons: object) -> None:
        self.addons = list(addons)


def _log_addon_error() -> None:
    etype, value, tb = sys.exc_info()
    tb = cut_traceback(tb, "invoke_addon_sync")
    tb = cut_traceback(tb, "invoke_addon")
    assert etype is not None and value is not None
    _addon_log.error(f"Addon error: {value}", exc_info=(etype, value, tb))


def _not_callable(name: str, addon: object) -> Any:
    def fail(*_args: object) -> None:  # raised when dispatched, inside the entry's error guard, as mitmproxy does
        raise exceptions.AddonManagerError(f"Addon handler {name} ({addon}) not callable")
    return fail


class CachedAddonManager(AddonManager):
    """mitmproxy's AddonManager with each hook's handlers looked up once (see the module docstring)."""

    _hook_cache: dict[str, _Handlers]

    def _handlers(self, name: str) -> _Handlers:
        try:
            return self._hook_cache[name]
        except AttributeError:
            self._hook_cache = {}
        except KeyError:
            pass
        found = []
        for entry in self.chain:
            funcs = []
            for a in traverse([entry]):
                func = getattr(a, name, None)
                if not func:
                    continue
                if not callable(func):  # a module of the hook's name is skipped; anything else is an error
                    if not isinstance(func, types.ModuleType):
                        funcs.append(_not_callable(name, a))
                    continue
                funcs.append(func)
            if funcs:
                found.append(tuple(funcs))
        handlers = self._hook_cache[name] = tuple(found)
        return handlers

    def _forget_hooks(self) -> None:
        self._hook_cache = {}

    def register(self, addon: Any) -> Any:
        self._forget_hooks()
        try:
            return super().register(addon)
        finally:
            self._forget_hooks()

    def add(self, *addons: Any) -> None:
        super().add(*addons)
        self._forget_hooks()

    def remove(self, addon: Any) -> None:
        super().remove(addon)
        self._forget_hooks()

    def clear(self) -> None:
        super().clear()
        self._forget_hooks()

    async def trigger_event(self, event: hooks.Hook) -> None:
        handlers = self._handlers(event.name)
        if not handlers:
            return
        args = event.args()
        for funcs in handlers:
            try:
                for func in funcs:
                    res = func(*args)
                    if res is not None and inspect.isawaitable(res):
                        await res
            except exceptions.AddonHalt:
                return
            except exceptions.OptionsError:
                raise
            except Exception:
                _log_addon_error()

    async def handle_lifecycle(self, event: hooks.Hook) -> None:
        await self.trigger_event(event)
        if self._handlers(hooks.UpdateHook.name):
            message = event.args()[0]
            if isinstance(message, flow.Flow):
                await self.trigger_event(hooks.UpdateHook([message]))


def use_hook_cache(master: Master) -> None:
    """Switch `master`'s addon manager to the cached hook dispatch (before any addon is added)."""
    if not isinstance(master.addons, CachedAddonManager):
        master.addons.__class__ = CachedAddonManager
