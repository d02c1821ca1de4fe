"""Remote and URL inputs: which fileset entries are URLs, their handlers, reads with a timeout and retries.

A fileset entry is a local name (relative to ``--data-dir``), an absolute path, or a URL:
``file://``, ``root://`` (xrootd, through fsspec-xrootd), ``http(s)://`` (fsspec + aiohttp) or
``s3://`` (s3fs). URLs are handed to uproot and fsspec as they are: never rewritten into local
paths. Every read of a URL here has a timeout and is retried after transient failures (a refused
or dropped connection, a timeout), not after a definite answer (404, access denied).
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, TypeVar

from hepsieve.processors.errors import ConfigurationError, InputFileError

T = TypeVar("T")
URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
#: scheme -> (module that reads it, the pip requirement that brings it)
HANDLERS: dict[str, tuple[str | None, str]] = {
    "file": (None, ""),
    "http": ("aiohttp", "aiohttp"),
    "https": ("aiohttp", "aiohttp"),
    "root": ("fsspec_xrootd", "hepsieve[xrootd]"),
    "s3": ("s3fs", "hepsieve[s3]"),
}
#: a definite answer of the server: retrying cannot change it
DEFINITE = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


@dataclass(frozen=True)
class RemotePolicy:
    """Timeout [s] of each read of a URL, retries after transient failures, first back-off [s]."""

    timeout_s: float = 30.0
    retries: int = 2
    backoff_s: float = 0.5


def url_scheme(name: str) -> str | None:
    """Return the scheme of a URL entry (``https``, ``root``, ...), None for a local name."""
    match = URL.match(name)
    return match.group(1).lower() if match else None


def is_url(name: str) -> bool:
    """Return whether a fileset entry is a URL (``scheme://...``) rather than a local path."""
    return url_scheme(name) is not None


def is_remote(name: str) -> bool:
    """Return whether an entry is read over the network (a URL other than ``file://``)."""
    return url_scheme(name) not in (None, "file")


def check_url(url: str) -> None:
    """Raise ConfigurationError when no handler can read ``url`` (unknown scheme, missing package)."""
    scheme = url_scheme(url)
    if scheme is None:
        return
    if scheme not in HANDLERS:
        known = ", ".join(f"{s}://" for s in HANDLERS)
        raise ConfigurationError(f"{url}: scheme {scheme}:// is not supported (use a local path, {known})")
    module, requirement = HANDLERS[scheme]
    if module is not None and importlib.util.find_spec(module) is None:
        raise ConfigurationError(
            f"{url}: reading {scheme}:// needs the Python package {module}: pip install '{requirement}'"
        )


def transient(err: BaseException) -> bool:
    """Return whether a failed read may succeed when tried again (connection errors, timeouts)."""
    if isinstance(err, DEFINITE):
        return False
    return isinstance(err, OSError | TimeoutError | asyncio.TimeoutError | ConnectionError)


def with_retries(read: Callable[[], T], url: str, policy: RemotePolicy) -> T:
    """Return ``read()``, retried after transient failures; InputFileError naming ``url`` when it fails.

    A definite failure (not found, access denied) and any other error are raised at once as the
    InputFileError; the back-off doubles after each attempt.
    """
    for attempt in range(policy.retries + 1):
        try:
            return read()
        except InputFileError:
            raise
        except Exception as err:
            if transient(err) and attempt < policy.retries:
                time.sleep(policy.backoff_s * 2**attempt)
                continue
            tries = f" after {attempt + 1} attempts" if attempt else ""
            raise InputFileError(
                f"{url}: cannot be read{tries} ({type(err).__name__}: {_short(err)})"
            ) from err
    raise AssertionError("unreachable")  # pragma: no cover


def _short(err: BaseException) -> str:
    text = " ".join(str(err).split()) or "no message"
    return text if len(text) <= 300 else text[:300] + " ..."


def storage_options(url: str, timeout_s: float) -> dict[str, Any]:
    """Return the fsspec options that put a timeout on reads of ``url``."""
    if url_scheme(url) in ("http", "https"):
        import aiohttp

        return {"client_kwargs": {"timeout": aiohttp.ClientTimeout(total=timeout_s)}}
    if url_scheme(url) == "root":
        return {"timeout": int(max(timeout_s, 1))}
    return {}


def open_url(url: str, timeout_s: float) -> IO[bytes]:
    """Return a binary file object reading ``url`` through fsspec (with a timeout)."""
    import fsspec

    return fsspec.open(url, "rb", **storage_options(url, timeout_s)).open()


def url_size(url: str, timeout_s: float) -> int:
    """Return the size in bytes of the file at ``url``."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(url, **storage_options(url, timeout_s))
    return int(fs.size(path))


def uproot_options(url: str, timeout_s: float) -> dict[str, Any]:
    """Return the ``uproot.open`` options that read ``url`` with a timeout [s]."""
    return {"timeout": timeout_s} if is_remote(url) else {}
