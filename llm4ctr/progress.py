"""Progress reporting that suits where the output goes.

On a terminal a stage shows live tqdm bars. In a log file (``make run > run.log``, CI, DVC) a bar
redraw would become a new line for every update, so bars are off there and the loops report through
``logging`` instead: one line per epoch (or per checkpoint of a step loop), and the CLI one line per
finished stage. :func:`configure_output` routes the project's loggers to stderr at INFO and turns
the libraries' own bars (model loading and conversion) off in the same case.
"""

from __future__ import annotations

import logging
import os
import sys

PROJECT_LOGGERS = ("assets", "models", "orchestration", "llm4ctr", "serving")


def bar(iterable=None, *, enabled: bool = True, **kwargs):
    """A tqdm bar when ``enabled`` and stderr is a terminal; a silent pass-through otherwise."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=None if enabled else True, **kwargs)  # None: off unless a TTY


def configure_output() -> None:
    """INFO lines of the project's own modules on stderr (libraries stay at their own levels); no
    library bars unless stderr is a terminal. Call before transformers is imported."""
    if not sys.stderr.isatty():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TQDM_DISABLE", "1")  # libraries' own bars (the GGUF conversion's)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
    for name in PROJECT_LOGGERS:
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False
