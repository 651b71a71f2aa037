"""Project exceptions: every error a user can cause names the file, field or value at fault.

The CLI catches :class:`Llm4ctrError` and prints its message without a traceback, exiting non-zero.
Anything else escaping is a bug in llm4ctr and keeps its traceback.
"""

from collections.abc import Sequence


class Llm4ctrError(Exception):
    """Base class for errors caused by input, configuration or environment, not by a bug."""


class ParamsError(Llm4ctrError):
    """A parameter in params.yaml (or an override) is missing or has an invalid value."""


class DataError(Llm4ctrError):
    """An input data file is missing, unreadable or does not have the expected content."""


class ChecksumError(DataError):
    """A downloaded or supplied file does not match its pinned checksum."""


class SourceUnavailable(Llm4ctrError):
    """A data or model source (URL, local path, PyPI wheel) could not provide the files."""


class OutputLocked(Llm4ctrError):
    """Another run (named in the message) is writing the same stage output right now."""


class ValidationFailed(DataError):
    """A Great Expectations suite failed; ``summary`` is human readable, ``result_path`` holds the full JSON,
    ``docs_pages`` are the Data Docs pages of the failed validations."""

    def __init__(self, summary: str, result_path: str | None = None, docs_pages: Sequence[str] = ()):
        self.summary = summary
        self.result_path = result_path
        self.docs_pages = list(docs_pages)
        lines = [summary, *([f"Full result: {result_path}"] if result_path else [])]
        lines += [f"Data Docs: {page}" for page in self.docs_pages]
        super().__init__("\n".join(lines))
