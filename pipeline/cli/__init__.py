"""The ``colbert-pipeline`` command line: one module per group of commands, each handler thin.

The work lives in ``stages/`` and ``ops/``; a handler parses, calls it and prints. Each module's
``add_commands`` adds its subcommands; handlers import what they need when they run, so a stage process
(``colbert-pipeline <stage>``) imports only the stage's own code (``colbert-pipeline dvc-deps`` lists it).

Example:
    $ colbert-pipeline prepare                     # one stage, as dvc.yaml runs it, configured by params.yaml
    $ colbert-pipeline train --set train.epochs=2  # with an override, validated like params.yaml
    $ colbert-pipeline validate                    # check params.yaml and print the resolved settings
    $ colbert-pipeline quality --config configs/scifact.yaml  # score systems on SciFact's full test set
    $ colbert-pipeline report                      # reports/quality.md and plots from every scored result
    $ colbert-pipeline demo                        # encode a few texts with the offline model and rerank them
    $ colbert-pipeline search "who wrote Dune?"    # top hits from the registry's champion and its index
    $ colbert-pipeline serve --port 5001           # the champion over HTTP, following promotions
    $ colbert-pipeline status                      # the champion: version, metrics, data/model/index hashes
    $ colbert-pipeline reproduce champion --into /tmp/champion   # its run's checkout, pulled and verified
    $ colbert-pipeline experiments                 # DVC experiments: differing params and nDCG@10
    $ colbert-pipeline dvc-deps --check            # are dvc.yaml's code dependencies current?
    $ colbert-pipeline task train --run nightly-42  # one stage of a run, anywhere (the shared remotes only)
    $ colbert-pipeline --version                   # the installed version (pipeline.__version__)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from pipeline import __version__
from pipeline.cli import experiments, registry, serving, stages, task, tools
from pipeline.project.errors import EXIT_CODES, classify

# The CLI is offline unless the user says otherwise: the default model ships with the package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DESCRIPTION = "Fine-tune, evaluate, index and ship ColBERT models: pipeline stages, registry, experiments."
#: The command groups, in the order ``--help`` lists them.
GROUPS = (tools, stages, task, registry, serving, experiments)


class Parser(argparse.ArgumentParser):
    """argparse's parser with a one-line usage error (exit 2), like every other user error of the CLI.

    argparse prints the whole usage first: for a stage that is several lines before the one that matters.
    Subcommands' parsers are of this class too (``add_subparsers`` makes its parsers of the parent's class).
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="colbert-pipeline", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # argparse blames the top-level parser; the command's own --help is where the options are
        Parser(prog=f"{parser.prog} {args.command}").error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except Exception as error:
        kind = classify(error)
        if kind == "internal":  # a crash: the traceback is what a developer needs
            logging.getLogger("pipeline.cli").exception("colbert-pipeline %s crashed", args.command)
        else:  # bad input or a failing service: one line that names the cause
            label = "error" if kind == "input" else "unavailable"
            print(f"colbert-pipeline {args.command}: {label}: {one_line(error)}", file=sys.stderr)
        stages.write_result(
            {
                "stage": args.command,
                "ok": False,
                "kind": kind,
                "exit_code": EXIT_CODES[kind],
                "message": f"{type(error).__name__}: {error}",
            }
        )
        return EXIT_CODES[kind]


def one_line(error: BaseException) -> str:
    """The error's message on one line: a user (or a log grep) reads one line per failure."""
    return "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
