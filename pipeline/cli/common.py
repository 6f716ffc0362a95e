"""What every command that reads ``params.yaml`` shares: its arguments and how they load."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

#: The params file a command reads when ``--params`` is not given (all defaults where it is absent).
DEFAULT_PARAMS = "params.yaml"


def add_params_arguments(parser: argparse.ArgumentParser) -> None:
    """``--params FILE``, ``--config FILE`` (repeatable overlays) and ``--set KEY=VALUE`` (repeatable)."""
    parser.add_argument(
        "--params",
        metavar="FILE",
        help=f"params file (default: ./{DEFAULT_PARAMS}, all defaults where there is none; a FILE named "
        "here must exist)",
    )
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


def params_path(args: argparse.Namespace) -> str:
    """The params file the arguments name, else ``params.yaml``."""
    return args.params or DEFAULT_PARAMS


def load(args: argparse.Namespace) -> Any:
    """The validated :class:`~pipeline.project.config.Params` the arguments name.

    A file named on the command line must exist: a typo in ``--params`` must not quietly validate (and run
    with) the defaults. Only the implicit ``params.yaml`` may be absent.
    """
    from pipeline.project.config import ConfigError
    from pipeline.project.params_file import load_params, parse_override

    named = [("--params", args.params)] if args.params else []
    for flag, path in [*named, *(("--config", config) for config in args.config or [])]:
        if not Path(path).is_file():
            problem = "is a folder, not a file" if Path(path).is_dir() else "file not found"
            raise ConfigError(f"{flag} {path}: {problem}")
    overrides = dict(parse_override(text) for text in args.set or [])
    return load_params(params_path(args), overrides, overlays=args.config or [])


def project_of(args: argparse.Namespace) -> Path:
    """The project folder: the one holding the params file."""
    return Path(params_path(args)).resolve().parent
