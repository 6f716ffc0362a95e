"""What every command that reads ``params.yaml`` shares: its arguments and how they load."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_params_arguments(parser: argparse.ArgumentParser) -> None:
    """``--params FILE``, ``--config FILE`` (repeatable overlays) and ``--set KEY=VALUE`` (repeatable)."""
    parser.add_argument("--params", default="params.yaml", help="params file (default: ./params.yaml)")
    parser.add_argument(
        "--config",
        action="append",
        metavar="FILE",
        help="a YAML overlay of params, e.g. configs/scifact.yaml (repeatable, applied in order)",
    )
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a param, e.g. train.epochs=2 (repeatable)",
    )


def load(args: argparse.Namespace) -> Any:
    """The validated :class:`~pipeline.project.config.Params` the arguments name."""
    from pipeline.project.params_file import load_params, parse_override

    overrides = dict(parse_override(text) for text in args.set or [])
    return load_params(args.params, overrides, overlays=args.config or [])


def project_of(args: argparse.Namespace) -> Path:
    """The project folder: the one holding the params file."""
    return Path(args.params).resolve().parent
