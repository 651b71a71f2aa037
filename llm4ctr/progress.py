"""Progress reporting that suits where the output goes.

On a terminal a stage shows live tqdm bars. In a log file (``make run > run.log``, CI, DVC) a bar
redraw would become a new line for every update, so bars are off there and the loops report through
``logging`` instead: one line per epoch (or per checkpoint of a step loop), and the CLI one line per
finished stage. :func:`configure_logging` routes the project's loggers to stderr at INFO.
"""

from __future__ import annotations

import logging
import sys

PROJECT_LOGGERS = ("assets", "models", "orchestration", "llm4ctr", "serving")


def bar(iterable=None, *, enabled: bool = True, **kwargs):
    """A tqdm bar when ``enabled`` and stderr is a terminal; a silent pass-through otherwise."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=None if enabled else True, **kwargs)  # None: off unless a TTY


def configure_logging() -> None:
    """INFO lines of the project's own modules on stderr (libraries stay at their own levels)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
    for name in PROJECT_LOGGERS:
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False
