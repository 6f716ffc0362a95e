"""``colbert-pipeline serve``: the registry alias's version over HTTP, following the alias (``ops.server``).

Defaults come from the environment the deployment already sets (``COLBERT_PIPELINE_BIND_HOST``,
``COLBERT_PIPELINE_SERVE_PORT``, ``COLBERT_PIPELINE_MODEL_NAME``, ``COLBERT_PIPELINE_MODEL_ALIAS``, as for
``python -m pipeline.ops.services``), then from ``params.yaml`` (``register.model_name``); options win over
both. It binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse
import os

from pipeline.cli.common import add_params_arguments, load, project_of


def add_commands(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "serve",
        help="serve the champion over MLflow's scoring protocol, following its alias",
        description="POST /invocations (MLflow's scoring protocol), GET /ping, GET /health. The alias is "
        "polled every --poll-seconds; a version it newly names is loaded and warmed beside the served one, "
        "then requests switch to it. SIGTERM drains the requests in flight.",
    )
    parser.add_argument(
        "--host",
        default=os.environ.get("COLBERT_PIPELINE_BIND_HOST") or "127.0.0.1",
        help="address to listen on (default: $COLBERT_PIPELINE_BIND_HOST, else 127.0.0.1)",
    )
    parser.add_argument(
        "--port", type=int, default=None, help="port (default: $COLBERT_PIPELINE_SERVE_PORT, else 5001)"
    )
    parser.add_argument(
        "--model",
        default=None,
        help="registered model (default: $COLBERT_PIPELINE_MODEL_NAME, else register.model_name)",
    )
    parser.add_argument(
        "--alias",
        default=os.environ.get("COLBERT_PIPELINE_MODEL_ALIAS") or "champion",
        help="the alias served and followed (default: $COLBERT_PIPELINE_MODEL_ALIAS, else champion)",
    )
    parser.add_argument(
        "--poll-seconds", type=float, default=10.0, help="how often the alias is looked up (default: 10)"
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=None,
        help="larger request bodies get 413 (default: 1048576, 1 MiB)",
    )
    parser.add_argument(
        "--max-k",
        type=int,
        default=None,
        help="a larger k is refused: 400 (default: 1000)",
    )
    parser.add_argument(
        "--max-queries",
        type=int,
        default=None,
        help="queries per request at most (default: 256)",
    )
    parser.add_argument(
        "--batching",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="encode waiting requests together (default: on; measured in bench/records/serve_load.json)",
    )
    parser.add_argument("--max-batch", type=int, default=32, help="queries per batch at most (default: 32)")
    parser.add_argument(
        "--drain-seconds", type=int, default=30, help="SIGTERM waits this long for requests in flight"
    )
    parser.add_argument("--access-log", action="store_true", help="log every request")
    add_params_arguments(parser)
    parser.set_defaults(handler=serve)


def serve(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or Ctrl-C."""
    from pipeline.ops import server, tracking
    from pipeline.ops.scoring import Limits

    params = load(args)
    for name in ("port", "max_body_bytes", "max_k", "max_queries", "max_batch"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')}: must be at least 1, got {value}")
    if args.poll_seconds <= 0:
        raise ValueError(f"--poll-seconds: must be positive, got {args.poll_seconds}")
    port = args.port or int(os.environ.get("COLBERT_PIPELINE_SERVE_PORT") or server.DEFAULT_PORT)
    uri = tracking.tracking_uri(params, project_of(args))
    # A poll against a registry that is down fails within seconds and is tried again at the next poll.
    tracking.bound_mlflow_http_retries(params.tracking.retries, params.tracking.request_timeout)
    import mlflow

    mlflow.set_tracking_uri(uri)  # where versions are downloaded from
    settings = server.ServeSettings(
        model_name=args.model or os.environ.get("COLBERT_PIPELINE_MODEL_NAME") or params.register.model_name,
        alias=args.alias,
        host=args.host,
        port=port,
        tracking_uri=uri,
        poll_seconds=args.poll_seconds,
        limits=Limits(
            **{
                name: getattr(args, name)
                for name in ("max_body_bytes", "max_k", "max_queries")
                if getattr(args, name) is not None
            }
        ),
        batching=args.batching,
        max_batch=args.max_batch,
        drain_seconds=args.drain_seconds,
        access_log=args.access_log,
    )
    server.serve(settings)
    return 0
