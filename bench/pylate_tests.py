"""Run PyLate's own test files against ``pipeline``, offline, and print a pass/fail table.

Takes the path of a PyLate checkout (or an unpacked PyLate sdist, which ships ``tests/``), copies its
``tests/`` to a scratch folder outside this repository, and rewrites only what offline running needs:

- ``pylate`` imports become ``pipeline`` imports (``from pylate import x`` -> ``from pipeline import x``,
  ``from pylate.a import b`` -> ``from pipeline.a import b``);
- Hugging Face Hub model ids in string literals become the offline all-MiniLM-L6-v2
  (``pipeline.models.default_model_path()``);
- ``datasets.load_dataset("lightonai/lighton-ms-marco-mini", ...)`` reads the local real KD/triplet
  sample instead (``../shared/data/kd-sample-flagembedding``): its ``train`` / ``queries`` / ``documents``
  tables and ``triplet`` rows (the first ``--triplet-rows`` of them, to bound CPU training time).

Assertions are left untouched. Each test file runs in its own pytest process (``--timeout`` seconds),
from the scratch folder, and the table gives passed / failed / skipped counts and the first failure's
reason. Nothing of PyLate is copied into this repository: the scratch folder defaults to
``/work/pylate-tests``.

Usage:
    .venv/bin/python -m bench.pylate_tests /tmp/pylate-sdist/pylate-1.6.0 --out /work/pylate-tests
    .venv/bin/python -m bench.pylate_tests CHECKOUT --files test_kd.py test_plaid.py --json results.json
    make bench-pylate-tests PYLATE=/tmp/pylate-sdist/pylate-1.6.0
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import DATA, REPO

HUB_DATASET = "lightonai/lighton-ms-marco-mini"
#: A string literal that looks like a Hub model id (owner/name), or a bare well-known one.
HUB_MODEL = re.compile(r"""(["'])((?:[A-Za-z0-9][\w.-]*/[\w.-]+)|bert-base-uncased)\1""")
NOT_MODELS = {HUB_DATASET}

SHIM = '''"""Local stand-in for datasets.load_dataset, written by bench.pylate_tests."""
import datasets

FOLDER = {folder!r}
TRIPLET_ROWS = {triplet_rows}


def load_dataset(path=None, name=None, split=None, **kwargs):
    if path != {hub!r}:
        return datasets.load_dataset(path, name, split=split, **kwargs)
    files = {{
        "train": "train.jsonl",
        "queries": "queries.jsonl",
        "documents": "documents.jsonl.gz",
        "triplet": "triplets.jsonl.gz",
    }}
    table = datasets.Dataset.from_json(FOLDER + "/" + files[name])
    if name == "triplet":
        table = table.select(range(min(TRIPLET_ROWS, len(table))))
        table = table.select_columns(["query", "positive", "negative"])
    if name == "train":
        table = table.select_columns(["query_id", "document_ids", "scores"])
    return table if split is not None else datasets.DatasetDict({{"train": table}})
'''


def rewrite(text: str, model_path: str) -> str:
    """PyLate's test source with pipeline imports, the offline model and the local dataset shim."""
    text = re.sub(r"^(\s*)from pylate(\.[\w.]+)? import", r"\1from pipeline\2 import", text, flags=re.M)
    text = re.sub(r"^(\s*)import pylate\b", r"\1import pipeline as pylate", text, flags=re.M)
    text = re.sub(
        r"^from datasets import load_dataset$", "from _local_data import load_dataset", text, flags=re.M
    )

    def model(match: re.Match[str]) -> str:
        value = match.group(2)
        if value in NOT_MODELS or value.startswith(("tests/", "test_")):
            return match.group(0)
        return json.dumps(model_path)

    return HUB_MODEL.sub(model, text)


def prepare(checkout: Path, out: Path, triplet_rows: int) -> list[Path]:
    from pipeline.models import default_model_path

    source = checkout / "tests"
    if not source.is_dir():
        raise SystemExit(f"{source} does not exist: pass a PyLate checkout or unpacked sdist")
    if out.resolve().is_relative_to(REPO):
        raise SystemExit(f"--out {out} is inside this repository; PyLate's tests must stay outside it")
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(source, out)
    model_path = default_model_path()
    files = sorted(out.glob("test_*.py"))
    for path in [*files, *out.glob("conftest.py")]:
        path.write_text(rewrite(path.read_text(encoding="utf-8"), model_path), encoding="utf-8")
    folder = DATA / "kd-sample-flagembedding"
    (out / "_local_data.py").write_text(
        SHIM.format(folder=str(folder), triplet_rows=triplet_rows, hub=HUB_DATASET), encoding="utf-8"
    )
    return files


def run_file(path: Path, timeout: int) -> dict[str, Any]:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join([str(path.parent), str(REPO)]),
    }
    command = [sys.executable, "-m", "pytest", path.name, "-q", "-rA", "-p", "no:cacheprovider", "-x"]
    command[-1:] = []  # run every test of the file, not up to the first failure
    start = time.monotonic()
    try:
        done = subprocess.run(
            command, cwd=path.parent, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        output, timed_out = done.stdout + done.stderr, False
    except subprocess.TimeoutExpired as error:
        output = (error.stdout or b"").decode() if isinstance(error.stdout, bytes) else (error.stdout or "")
        timed_out = True
    counts = {
        kind: len(re.findall(rf"^{kind.upper()} ", output, flags=re.M)) for kind in ("passed", "failed")
    }
    counts["error"] = len(re.findall(r"^ERROR ", output, flags=re.M))
    counts["skipped"] = len(re.findall(r"^SKIPPED ", output, flags=re.M))
    reasons = re.findall(r"^(?:FAILED|ERROR) \S+ - (.+)$", output, flags=re.M)
    if not reasons:
        reasons = re.findall(r"^E\s+(.+)$", output, flags=re.M)[:1]
    return {
        "file": path.name,
        **counts,
        "timed_out": timed_out,
        "seconds": round(time.monotonic() - start, 1),
        "first_failure": (reasons[0][:160] if reasons else ""),
        "result": "timeout"
        if timed_out
        else "pass"
        if counts["passed"] and not (counts["failed"] or counts["error"])
        else "fail"
        if counts["failed"] or counts["error"]
        else "no tests run",
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkout", type=Path, help="a PyLate checkout or unpacked sdist (holds tests/)")
    parser.add_argument("--out", type=Path, default=Path("/work/pylate-tests"), help="scratch folder")
    parser.add_argument("--files", nargs="*", help="only these test files (names)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per test file")
    parser.add_argument("--triplet-rows", type=int, default=40, help="triplet rows the shim serves")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()

    files = prepare(args.checkout, args.out, args.triplet_rows)
    if args.files:
        files = [f for f in files if f.name in set(args.files)]
    rows = []
    for path in files:
        row = run_file(path, args.timeout)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print()
    print("| file | result | passed | failed | errors | first failure |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['file']} | {row['result']} | {row['passed']} | {row['failed']} | {row['error']} | "
            f"{row['first_failure'].replace('|', '/')} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
