"""The last lines of ``make test``: each tier passed / failed / skipped, with the reasons for skips.

pytest's junit XML holds every test's outcome and, from conftest.py, its tier (``fast``, ``slow``, ``faults``,
``deploy``); the docker tier is ``docker/test-docker.sh``'s exit status and output. The docker line comes
last: where that tier did not run for lack of disk, the run's last line says so, with the free space.

    python tests/tier_summary.py --junit FILE --docker-log FILE --docker-status N
"""

from __future__ import annotations

import argparse
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from pathlib import Path

TIERS = ("fast", "slow", "faults", "deploy")
DOCKER_SKIPPED = "test-docker: SKIPPED (not run, not passed): "


def tiers(junit: Path) -> dict[str, tuple[Counter, Counter]]:
    """Per tier: counts of passed / failed / skipped tests and each skip reason with its count."""
    counts: dict[str, Counter] = defaultdict(Counter)
    reasons: dict[str, Counter] = defaultdict(Counter)
    for case in ET.parse(junit).getroot().iter("testcase"):
        tier = next((p.get("value") for p in case.iter("property") if p.get("name") == "tier"), "collection")
        skipped = case.find("skipped")
        if case.find("failure") is not None or case.find("error") is not None:
            counts[tier]["failed"] += 1
        elif skipped is not None:
            counts[tier]["skipped"] += 1
            reasons[tier][(skipped.get("message") or "no reason given").removeprefix("Skipped: ")] += 1
        else:
            counts[tier]["passed"] += 1
    return {tier: (counts[tier], reasons[tier]) for tier in counts}


def tier_line(name: str, counts: Counter, reasons: Counter) -> str:
    """One tier's line.

    Example:
        >>> tier_line("fast", Counter(passed=3, skipped=1), Counter({"no GPU": 1}))
        'fast: 3 passed, 0 failed, 1 skipped (1: no GPU)'
    """
    line = f"{name}: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped"
    if reasons:
        line += " (" + "; ".join(f"{n}: {reason}" for reason, n in reasons.most_common()) + ")"
    return line


def docker_line(log: Path, status: int | None) -> str:
    """The docker tier's line from its output and exit status (``None``: it did not run).

    Example:
        >>> import tempfile
        >>> log = Path(tempfile.mkdtemp()) / "docker.log"
        >>> _ = log.write_text(DOCKER_SKIPPED + "20 GB free under /var/lib; a cold run needs about 32 GB\\n")
        >>> docker_line(log, 0)
        'docker: skipped: 20 GB free under /var/lib; a cold run needs about 32 GB'
    """
    if status is None:
        return "docker: not run (an earlier tier failed)"
    lines = log.read_text(errors="replace").splitlines() if log.is_file() else []
    skipped = [line.removeprefix(DOCKER_SKIPPED) for line in lines if line.startswith(DOCKER_SKIPPED)]
    if status != 0:
        last = next((line for line in reversed(lines) if line.strip()), "no output")
        return f"docker: failed (exit {status}): {last}"
    return f"docker: skipped: {skipped[-1]}" if skipped else "docker: passed"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--junit", type=Path, required=True)
    parser.add_argument("--docker-log", type=Path, required=True)
    parser.add_argument("--docker-status", type=int, default=None, help="omitted: the tier did not run")
    args = parser.parse_args(argv)
    print("make test, by tier:")
    if args.junit.is_file():
        found = tiers(args.junit)
        for name in sorted(found, key=lambda t: TIERS.index(t) if t in TIERS else len(TIERS)):
            print(tier_line(name, *found[name]))
    else:
        print(f"pytest: no results ({args.junit} is missing: pytest did not get to write them)")
    print(docker_line(args.docker_log, args.docker_status))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
