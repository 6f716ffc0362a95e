"""What every benchmark shares: paths, the environment a record names, record files, timing, workers.

Importable on both sides of a comparison: the project's venv and PyLate's (``bench/.peer-venv``, or the GPU
machine's unpacked wheels). So this module imports only the standard library at module level; torch and
psutil are imported where a function needs them, and ``pipeline`` never is.

A measured step runs in a fresh process (its peak memory is its own, and each side imports its own
library): :func:`run_worker` starts ``python -m <module> ... --result FILE`` with :func:`worker_env` and reads
the JSON the worker wrote with :func:`write_record`.
"""

from __future__ import annotations

import cProfile
import io
import json
import logging
import os
import platform
import pstats
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

logger = logging.getLogger("bench")

REPO = Path(__file__).resolve().parents[1]
#: The BEIR corpora and the KD sample: ``../shared/data``, or ``COLBERT_BENCH_DATA`` (the GPU machine's copy).
DATA = Path(os.environ.get("COLBERT_BENCH_DATA") or REPO.parent / "shared" / "data")
#: The committed records (JSON), one folder for every benchmark; PyLate's quality runs under ``peer/runs/``.
RECORDS = REPO / "bench" / "records"
#: What is not a record: cached embeddings and each run's full results (git-ignored; ``COLBERT_BENCH_CACHE``
#: puts them elsewhere).
CACHE = Path(os.environ.get("COLBERT_BENCH_CACHE") or REPO / "bench" / ".cache")
PEER_VENV = REPO / "bench" / ".peer-venv"
PEER_REQUIREMENT = "pylate==1.6.*"
#: PyLate's Voyager index needs these, which its default install leaves out. PyLate 1.6 hands voyager a list
#: of arrays, which voyager 2.2's add_items rejects (TypeError): 2.1 still takes it.
PEER_EXTRAS = ("voyager>=2.1,<2.2", "sqlitedict")
PEER_CHECK = (
    "import importlib.metadata as m, pylate, sqlitedict; assert m.version('voyager').startswith('2.1.')"
)


class WorkerError(RuntimeError):
    """A benchmark's worker process failed; the message ends with its stderr's tail."""


# ------------------------------------------------------------------------------------------ records
def environment() -> dict[str, Any]:
    """Where a record was measured: date, CPU, cores, memory, load, Python, torch and its threads, GPU."""
    import psutil
    import torch

    return {
        "date": time.strftime("%Y-%m-%d"),
        "cpu": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        # Whether `precision: auto` means bfloat16 on this CPU: oneDNN's check, as
        # pipeline.models.precision.cpu_has_native_bf16 asks it. Repeated here because this also runs in
        # PyLate's venv, where importing pipeline.models fails (its sentence-transformers has no `base`).
        "cpu_native_bf16": bool(
            torch.backends.mkldnn.is_available()
            and getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)()
        ),
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_avg_1m": round(os.getloadavg()[0], 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        **({"gpu": torch.cuda.get_device_name()} if torch.cuda.is_available() else {}),
    }


def cpu_model() -> str | None:
    """The CPU's model name as Linux reports it (``/proc/cpuinfo``), or ``None`` where it does not."""
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), None)


def command_line(module: str, argv: list[str] | None = None) -> str:
    """How this run was started, as a record keeps it: ``python -m bench.index --peer ...``."""
    return " ".join(["python -m", module, *(sys.argv[1:] if argv is None else argv)])


def write_record(path: str | os.PathLike[str], data: Any, sort_keys: bool = False) -> Path:
    """Write ``data`` as indented JSON to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(data, indent=2, sort_keys=sort_keys) + "\n", encoding="utf-8")
    os.replace(temp, path)
    return path


# ------------------------------------------------------------------------------------------ setups
#: What must match between the two sides of a comparison unless the comparison declares it: the precision
#: the side computed in, torch's threads, and the versions of the stack under both libraries.
SETUP_KEYS = ("precision", "torch_threads", "torch", "transformers", "sentence-transformers", "fast-plaid")
#: Versions a comparison may declare even "like for like": each library pins its own (PyLate 1.6 cannot run
#: on fast-plaid 1.7); precision and threads it may not.
VERSION_KEYS = SETUP_KEYS[2:]
#: The versions PyLate 1.6's venv pins apart from ours (torch is pinned alike): a comparison declares them.
PEER_PINNED = ("transformers", "sentence-transformers", "fast-plaid")
COMPARISONS = ("like for like", "defaults")
#: Each side's library, recorded beside the setup (it is what is compared, so never checked).
LIBRARY_DISTRIBUTIONS = {"pipeline": "colbert-pipeline", "pylate": "pylate"}


class SetupMismatch(ValueError):
    """Two rows were to be compared while their setups differ in a way the comparison does not declare."""


def setup(library: str, precision: str) -> dict[str, Any]:
    """The setup a measured side ran with: ``library`` (``pipeline`` or ``pylate``) and its version, the
    ``precision`` it actually computed in, torch's threads, and the versions of :data:`VERSION_KEYS`
    (``None`` where one is not installed). Call it in the worker, after the work (threads as used).
    """
    import importlib.metadata as metadata

    import torch

    def version(distribution: str) -> str | None:
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            return None

    return {
        "library": library,
        "library_version": version(LIBRARY_DISTRIBUTIONS.get(library, library)),
        "precision": precision,
        "torch_threads": torch.get_num_threads(),
        **{name: version(name) for name in VERSION_KEYS},
    }


def check_setups(
    ours: dict[str, Any],
    peer: dict[str, Any],
    comparison: str,
    declared: Collection[str] = (),
    what: str = "comparison",
) -> dict[str, tuple[Any, Any]]:
    """The declared differences between two sides' :func:`setup` records, ``{key: (ours, peer)}``.

    ``comparison`` is ``"like for like"`` (only versions may be ``declared``: each library pins its own)
    or ``"defaults"`` (each library at its defaults: any key may be declared, e.g. precision bf16 vs fp32).
    Any difference in :data:`SETUP_KEYS` that is not declared raises :class:`SetupMismatch` naming each
    differing key with both values; ``what`` says which rows.

    >>> a = {"precision": "bf16", "torch_threads": 2, "fast-plaid": "1.7.0"}
    >>> b = {"precision": "fp32", "torch_threads": 2, "fast-plaid": "1.4.6"}
    >>> check_setups(a, b, "defaults", declared=("precision", "fast-plaid"))
    {'precision': ('bf16', 'fp32'), 'fast-plaid': ('1.7.0', '1.4.6')}
    >>> check_setups(a, b, "defaults", declared=("precision",), what="encode")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    bench.common.SetupMismatch: encode: a 'defaults' comparison ... does not say so: fast-plaid 1.7.0 vs 1.4.6
    """
    if comparison not in COMPARISONS:
        raise SetupMismatch(f"{what}: comparison {comparison!r} is none of {COMPARISONS}")
    unknown = set(declared) - set(SETUP_KEYS)
    fixed = set(declared) - set(VERSION_KEYS) if comparison == "like for like" else set()
    if unknown or fixed:
        raise SetupMismatch(
            f"{what}: a {comparison!r} comparison cannot declare {sorted(unknown | fixed)} as a difference"
        )
    differing = {key: (ours.get(key), peer.get(key)) for key in SETUP_KEYS if ours.get(key) != peer.get(key)}
    unlabelled = [key for key in differing if key not in declared]
    if unlabelled:
        named = "; ".join(f"{key} {differing[key][0]} vs {differing[key][1]}" for key in unlabelled)
        raise SetupMismatch(
            f"{what}: a {comparison!r} comparison of setups that differ where it does not say so: {named}"
        )
    return differing


def differences_text(differing: dict[str, tuple[Any, Any]]) -> str:
    """How a table names declared differences: ``precision bf16 vs fp32; fast-plaid 1.7.0 vs 1.4.6``."""
    return "; ".join(f"{key} {a} vs {b}" for key, (a, b) in differing.items())


# ------------------------------------------------------------------------------------------ measuring
def peak_rss_mib() -> float:
    """This process's peak resident set size (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def synchronize(device: str) -> None:
    """Wait for the GPU's queued work, so a timer read next covers it (a no-op on CPU)."""
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def profiled(function: Callable[[], Any], top: int = 30) -> tuple[Any, str]:
    """``function()`` under cProfile: its result, and the top entries by cumulative and by own time."""
    profiler = cProfile.Profile()
    result = profiler.runcall(function)
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return result, text.getvalue()


# ------------------------------------------------------------------------------------------ workers
def worker_env(peer: bool) -> dict[str, str]:
    """A worker's environment: offline, and the import path of its side.

    Ours sees this checkout before any inherited ``PYTHONPATH``. PyLate's side sees
    ``COLBERT_PEER_PYTHONPATH`` (its unpacked wheels, ``bench/gpu_pass.sh``) when set, never an inherited
    ``PYTHONPATH`` (ours would shadow the peer venv's pinned libraries), and then this checkout, for the
    ``bench`` package (which holds no library of its own).
    """
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    first = os.environ.get("COLBERT_PEER_PYTHONPATH") if peer else None
    rest = None if peer else os.environ.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (first, str(REPO), rest) if p)
    return env


def run_worker(
    python: str | os.PathLike[str],
    module: str,
    arguments: list[str],
    *,
    peer: bool = False,
    timeout: float | None = None,
    stream: bool = False,
) -> dict[str, Any]:
    """Run ``python -m module *arguments --result FILE`` in a fresh process and return what it wrote there.

    ``stream``: its output goes to our stderr as it comes (a long training run's progress), else it is kept
    and its stderr's tail ends the :class:`WorkerError` of a failed run.
    """
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as folder:
        result = Path(folder) / "result.json"
        command = [str(python), "-m", module, *arguments, "--result", str(result)]
        logger.info("running %s", " ".join(command[2:]))
        output: dict[str, Any] = {"stdout": sys.stderr} if stream else {"capture_output": True}
        completed = subprocess.run(
            command, env=worker_env(peer), cwd=REPO, timeout=timeout, text=True, check=False, **output
        )
        if completed.returncode != 0:
            tail = "its log is above" if stream else completed.stderr[-3000:]
            raise WorkerError(f"{' '.join(command[2:4])} failed (exit {completed.returncode}):\n{tail}")
        return json.loads(result.read_text(encoding="utf-8"))


def die_with_parent() -> None:
    """A worker ends with the process that started it (Linux: ``PR_SET_PDEATHSIG``)."""
    if sys.platform != "linux":
        return
    import ctypes
    import signal

    parent = os.getppid()
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the call
        raise SystemExit("the bench's orchestrator is gone")


def ensure_peer_venv() -> Path:
    """An interpreter with PyLate: ``bench/.peer-venv``, installed with uv on first use (torch comes from uv's
    cache of the locked wheel).

    ``COLBERT_PEER_PYTHON`` names an interpreter that already has PyLate instead (the GPU machine has no
    registry: ``bench/gpu_pass.sh`` carries PyLate's wheels there and unpacks them into
    ``COLBERT_PEER_PYTHONPATH``).
    """
    given = os.environ.get("COLBERT_PEER_PYTHON")
    if given:
        check = subprocess.run([given, "-c", "import pylate"], env=worker_env(peer=True), check=False)
        if check.returncode != 0:
            raise RuntimeError(f"COLBERT_PEER_PYTHON={given}: cannot import pylate")
        return Path(given)
    python = PEER_VENV / "bin" / "python"
    if python.exists():
        check = subprocess.run([str(python), "-c", PEER_CHECK], capture_output=True, check=False)
        if check.returncode == 0:
            return python
    # `make install` puts uv in ~/.local/bin, which need not be on PATH.
    uv = shutil.which("uv") or shutil.which("uv", path=str(Path.home() / ".local" / "bin"))
    if uv is None:
        raise RuntimeError("the PyLate comparison needs uv on PATH to build bench/.peer-venv")
    logger.info("Installing %s into %s", PEER_REQUIREMENT, PEER_VENV)
    subprocess.run([uv, "venv", str(PEER_VENV), "--python", "3.11", "--allow-existing"], check=True)
    # torch is pinned to the project's (fast-plaid's wheels need an exact torch) so both sides use the same.
    subprocess.run(
        [uv, "pip", "install", "--python", str(python), PEER_REQUIREMENT, *PEER_EXTRAS, "torch==2.11.0"],
        check=True,
    )
    return python


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
