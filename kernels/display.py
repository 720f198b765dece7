"""How insitu's errors look in a researcher's kernel: one clear line.

A refused read raised deep inside zarr (or dask, or xarray) would otherwise
show a long traceback through their internals, with the one line that matters
at the end. The insitu kernel (:mod:`insitu.kernels.kernelspec`) calls
:func:`install` at start-up: every public :class:`~insitu.errors.InsituError` then shows as
``ErrorType: message`` (IPython's ``_render_traceback_`` hook); anything else
keeps IPython's usual traceback. The cell still fails (execution stops,
``%debug`` and ``sys.last_traceback`` keep the whole traceback).
"""

from __future__ import annotations

from typing import Any

__all__ = ["install", "one_line"]

RED, RESET = "\x1b[0;31m", "\x1b[0m"


def one_line(value: BaseException) -> str:
    """``ErrorType: message``, the type in red as IPython shows error names."""
    return f"{RED}{type(value).__name__}{RESET}: {value}"


def install(shell: Any = None) -> bool:
    """Show insitu's public errors as one line in this IPython shell; False outside IPython.

    IPython asks an exception for ``_render_traceback_()`` before it formats the
    traceback itself; the insitu kernel gives :class:`~insitu.errors.InsituError`
    one (only there: on the node, an admin's IPython keeps full tracebacks).
    """
    from insitu.errors import InsituError

    if shell is None:
        try:
            from IPython import get_ipython
        except ImportError:
            return False
        shell = get_ipython()
    if shell is None:
        return False

    def render(error: InsituError) -> list[str]:
        if error.public:
            return [one_line(error)]
        stb: list[str] = shell.InteractiveTB.structured_traceback(
            type(error), error, error.__traceback__
        )
        return stb

    InsituError._render_traceback_ = render  # type: ignore[attr-defined]
    return True
