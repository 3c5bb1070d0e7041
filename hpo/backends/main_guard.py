"""Worker processes start by re-importing the caller's script (``spawn``): a script that calls
``hpo.run_sweep`` at its top level, without ``if __name__ == "__main__":``, would start the
sweep again in every worker. Refuse that at once with the fix, instead of hanging."""

from __future__ import annotations

import ast
import multiprocessing
import sys

from hpo.errors import ConfigError

FIX = (
    "Put the call under a main guard, so that worker processes can import the script "
    "without running it:\n\n    if __name__ == \"__main__\":\n        hpo.run_sweep(...)\n\n"
    "(or use parallel: 1 with an objective, which runs trials in this process)."
)


def _is_main_test(node: ast.expr) -> bool:
    if not isinstance(node, ast.Compare) or len(node.comparators) != 1:
        return False
    names = [node.left, node.comparators[0]]
    has_name = any(isinstance(n, ast.Name) and n.id == "__name__" for n in names)
    has_main = any(isinstance(n, ast.Constant) and n.value == "__main__" for n in names)
    return has_name and has_main


def check_main_guard() -> None:
    """Raise ``ConfigError`` when this call comes from a script's top level with no main
    guard (parent side), or from a worker process importing such a script (child side)."""
    main = sys.modules.get("__main__")
    if main is None:
        return
    if main.__name__ == "__mp_main__" or (
        multiprocessing.parent_process() is not None
        and getattr(main, "__spec__", None) is None and _called_from_top(main)
    ):
        raise ConfigError("hpo.run_sweep was called while a worker process imported your "
                          f"script {getattr(main, '__file__', '')!r}. " + FIX)
    path = getattr(main, "__file__", None)
    if not path or not str(path).endswith(".py") or not _called_from_top(main):
        return
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return
    if not any(isinstance(n, ast.If) and _is_main_test(n.test) for n in tree.body):
        raise ConfigError(f"{path} calls hpo.run_sweep at its top level with parallel worker "
                          "processes. " + FIX)


def _called_from_top(main: object) -> bool:
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_globals is vars(main) and frame.f_code.co_name == "<module>":
            return True
        frame = frame.f_back
    return False


__all__ = ["check_main_guard"]
