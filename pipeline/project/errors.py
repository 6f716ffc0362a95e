"""One error root for the package, and the one table from an error's kind to an exit code and a retry rule.

Orchestrators need one bit per failure: can a retry help? :class:`InputError` (bad params, a malformed row, a
leak between splits, a missing input) cannot, so Airflow fails the task at once; :class:`InfrastructureError`
(a tracking server that does not answer, a refused connection, a full disk) can, so it is retried. Anything
else is a crash (``internal``): retried too, since it may be transient, and reported with its traceback.

Example:
    >>> classify(InputError("params.yaml: train.epochs: must be > 0"))
    'input'
    >>> classify(ConnectionRefusedError(111, "Connection refused"))
    'infrastructure'
    >>> classify(OSError(28, "No space left on device"))
    'infrastructure'
    >>> classify(FileNotFoundError(2, "No such file", "data/x.jsonl"))
    'input'
    >>> EXIT_CODES["input"], RETRYABLE["input"], EXIT_CODES["infrastructure"], RETRYABLE["infrastructure"]
    (2, False, 3, True)
    >>> kind_of_exit_code(3)
    'infrastructure'

A part of the package whose dependencies come with an extra refuses to import without them, naming the
extra (:func:`require`): a missing extra is the user's to fix, so it is an ``input`` error.
"""

from __future__ import annotations

import errno
import importlib.util
import socket
from typing import Literal

Kind = Literal["input", "infrastructure", "internal"]

#: The one table: exit status of ``colbert-pipeline <stage>`` for each kind of failure.
EXIT_CODES: dict[str, int] = {"internal": 1, "input": 2, "infrastructure": 3}
#: Whether an orchestrator should retry a failure of that kind.
RETRYABLE: dict[str, bool] = {"internal": True, "input": False, "infrastructure": True}

#: OSError numbers that say "the machine or the network", not "your input".
_INFRASTRUCTURE_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EFBIG,  # RLIMIT_FSIZE or a file system's size limit
        errno.EIO,
        errno.ENOMEM,
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.ETIMEDOUT,
        errno.EPIPE,
        errno.EAGAIN,
        errno.EROFS,
    }
)


class PipelineError(Exception):
    """Root of this package's errors; ``kind`` says whether retrying can help."""

    kind: Kind = "internal"


class InputError(PipelineError, ValueError):
    """Bad input (params, data, a missing upstream output): permanent, the message names the file/line/key."""

    kind: Kind = "input"


class InfrastructureError(PipelineError, RuntimeError):
    """A service or the machine failed (tracking server down, disk full): transient, worth a retry."""

    kind: Kind = "infrastructure"


class MissingExtraError(InputError, ModuleNotFoundError):
    """A part of the package was imported without the extra that installs what it needs."""


#: The distribution's name, as ``pip install`` spells it.
DISTRIBUTION = "colbert-pipeline"


def require(part: str, extra: str, *modules: str) -> None:
    """Refuse ``part`` (a module, a class) unless ``modules`` are installed, naming the extra that has them.

    The one check for optional dependencies: :mod:`pipeline.ops` and :mod:`pipeline.stages` call it when
    imported. It looks the top-level modules up without importing them.

    Example:
        >>> require("pipeline.ops", "mlops", "json")  # installed: nothing happens
        >>> try:
        ...     require("pipeline.ops", "mlops", "json", "nope")
        ... except ImportError as error:
        ...     print(error)
        pipeline.ops needs the 'mlops' extra (nope is not installed): pip install 'colbert-pipeline[mlops]'
    """
    missing = [name for name in modules if importlib.util.find_spec(name.partition(".")[0]) is None]
    if not missing:
        return
    verb = "is" if len(missing) == 1 else "are"
    error = MissingExtraError(
        f"{part} needs the {extra!r} extra ({', '.join(missing)} {verb} not installed): "
        f"pip install '{DISTRIBUTION}[{extra}]'"
    )
    error.name = missing[0]
    raise error


def classify(error: BaseException) -> Kind:
    """The kind of ``error``: ``input``, ``infrastructure`` or ``internal`` (see the module docstring).

    A client library's wrapper (MLflow raises ``MlflowException`` while handling a refused connection) is
    judged by what it wraps: any network or machine failure in its ``__cause__``/``__context__`` chain makes
    it ``infrastructure``.
    """
    if isinstance(error, PipelineError):
        return error.kind
    chain = []
    link: BaseException | None = error
    while link is not None and link not in chain and len(chain) < 20:
        chain.append(link)
        link = link.__cause__ or link.__context__
    if any(_is_infrastructure(link) for link in chain):
        return "infrastructure"
    return _classify_one(error)


def _is_infrastructure(error: BaseException) -> bool:
    if isinstance(error, ConnectionError | TimeoutError | socket.timeout | MemoryError):
        return True
    if isinstance(error, OSError) and error.errno in _INFRASTRUCTURE_ERRNOS:
        return True
    # requests' and urllib3's exceptions are all about the network (a refused connection, a timeout, 5xx
    # after retries); they subclass OSError without an errno.
    return type(error).__module__.split(".")[0] in {"requests", "urllib3"}


def _classify_one(error: BaseException) -> Kind:
    if isinstance(error, PipelineError):
        return error.kind
    if isinstance(error, OSError):
        if error.errno in _INFRASTRUCTURE_ERRNOS:
            return "infrastructure"
        # A missing or unreadable file, a path that is a folder: what the user pointed at is wrong.
        return "input"
    if isinstance(error, MemoryError):
        return "infrastructure"
    if isinstance(error, ValueError | KeyError | LookupError):
        return "input"
    return "internal"


def exit_code(error: BaseException) -> int:
    """The CLI's exit status for ``error``."""
    return EXIT_CODES[classify(error)]


def kind_of_exit_code(code: int) -> Kind:
    """The inverse of :data:`EXIT_CODES` (an unknown non-zero status is a crash: ``internal``)."""
    for kind, value in EXIT_CODES.items():
        if value == code:
            return kind  # type: ignore[return-value]
    return "internal"
