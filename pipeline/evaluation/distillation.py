"""``ColBERTDistillationEvaluator``: how far the student's scores are from the teacher's (KL divergence)."""

from __future__ import annotations

import csv
import logging
import os
from typing import Any

import torch
from sentence_transformers.base.evaluation import SentenceEvaluator

from pipeline.scores import colbert_scores_pairwise

logger = logging.getLogger(__name__)


class ColBERTDistillationEvaluator(SentenceEvaluator):
    """KL divergence between a teacher's scores and the model's MaxSim over each query's candidates.

    PyLate's evaluator for monitoring distillation: lower is better.

    Args:
        queries: Query texts.
        documents: One list of candidate texts per query, the same number for every query.
        scores: The teacher's scores, one list per query, aligned with ``documents``.
        name: Prefix of the metric key (``"<name>_kl_divergence"``) and of the CSV file.
        batch_size: Texts per encoding batch.
        show_progress_bar: Show tqdm bars while encoding.
        write_csv: Append ``epoch, steps, kl_divergence`` to ``distillation_evaluation[_<name>]_results.csv``.
        truncate_dim: Keep only the first ``truncate_dim`` dimensions of each token embedding.
        normalize_scores: Min-max scale the student's scores per query before the softmax (PyLate's default).

    Example:
        >>> from pipeline import evaluation
        >>> evaluator = evaluation.ColBERTDistillationEvaluator(
        ...     ["what do koalas eat?"], [["Koalas eat leaves.", "Trains run."]], [[1.0, 0.0]]
        ... )
        >>> result = evaluator(model)  # ``model``: a ColBERT model
        >>> sorted(result), result["kl_divergence"] >= 0
        (['kl_divergence'], True)
    """

    def __init__(
        self,
        queries: list[str],
        documents: list[list[str]],
        scores: list[list[float]],
        name: str = "",
        batch_size: int = 16,
        show_progress_bar: bool = False,
        write_csv: bool = True,
        truncate_dim: int | None = None,
        normalize_scores: bool = True,
    ) -> None:
        super().__init__()
        if not (len(queries) == len(documents) == len(scores)):
            raise ValueError(
                f"queries ({len(queries)}), documents ({len(documents)}) and scores ({len(scores)}) "
                "must have one entry per query"
            )
        if not queries:
            raise ValueError("the distillation evaluator needs at least one query")
        n_ways = len(documents[0])
        for row, (candidates, teacher) in enumerate(zip(documents, scores, strict=True)):
            if len(candidates) != n_ways:
                raise ValueError(
                    f"documents[{row}] has {len(candidates)} candidates, documents[0] has {n_ways}"
                )
            if len(teacher) != n_ways:
                raise ValueError(f"scores[{row}] has {len(teacher)} scores for {n_ways} documents")
        if n_ways < 2:
            raise ValueError(
                "each query needs at least two candidate documents (a softmax over one is constant)"
            )
        self.queries = list(queries)
        self.documents = [text for candidates in documents for text in candidates]
        self.n_ways = n_ways
        self.scores = scores
        self.name = name
        self.batch_size = batch_size
        self.show_progress_bar = show_progress_bar
        self.write_csv = write_csv
        self.truncate_dim = truncate_dim
        self.normalize_scores = normalize_scores
        self.csv_file = "distillation_evaluation" + (f"_{name}" if name else "") + "_results.csv"
        self.csv_headers = ["epoch", "steps", "kl_divergence"]
        self.primary_metric = "kl_divergence"
        self.greater_is_better = False

    def _encode(self, model: Any, texts: list[str], is_query: bool) -> list[torch.Tensor]:
        embeddings = model.encode(
            texts,
            batch_size=self.batch_size,
            show_progress_bar=self.show_progress_bar,
            convert_to_tensor=True,
            is_query=is_query,
        )
        embeddings = [torch.as_tensor(e) for e in embeddings]
        if self.truncate_dim is not None:
            embeddings = [e[..., : self.truncate_dim] for e in embeddings]
        return embeddings

    def __call__(
        self, model: Any, output_path: str | None = None, epoch: int = -1, steps: int = -1
    ) -> dict[str, float]:
        queries = self._encode(model, self.queries, is_query=True)
        documents = self._encode(model, self.documents, is_query=False)
        student = torch.stack(
            [
                colbert_scores_pairwise(queries, documents[way :: self.n_ways]).float()
                for way in range(self.n_ways)
            ],
            dim=1,
        )
        if self.normalize_scores:
            low = student.min(dim=1, keepdim=True).values
            high = student.max(dim=1, keepdim=True).values
            student = (student - low) / (high - low + 1e-8)
        teacher = torch.tensor(self.scores, dtype=torch.float32)
        kl_divergence = torch.nn.functional.kl_div(
            torch.log_softmax(student, dim=-1),
            torch.log_softmax(teacher, dim=-1),
            reduction="batchmean",
            log_target=True,
        ).item()
        if output_path is not None and self.write_csv:
            os.makedirs(output_path, exist_ok=True)
            csv_path = os.path.join(output_path, self.csv_file)
            new_file = not os.path.isfile(csv_path)
            with open(csv_path, mode="a", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                if new_file:
                    writer.writerow(self.csv_headers)
                writer.writerow([epoch, steps, kl_divergence])
        metrics = self.prefix_name_to_metrics({"kl_divergence": kl_divergence}, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics
