"""The project's own offline sample: a small, learnable retrieval task generated from a seed.

Each made-up organisation (``Velmora Instruments``, ...) has one short document per fact (founding, location,
products, staff, ...). A question asks for one fact in words that differ from the document's ("where is X
based?" vs "X runs its operations out of ..."), and the other facts about the same organisation are hard
negatives that share its name. Each organisation also has a *decoy* per fact: a document that borrows the
question's words without answering it ("X asked its employees how many people ..."). An untrained ColBERT
finds the right organisation but is drawn to the decoys (nDCG@10 0.66 on the default benchmark); fine-tuning
teaches it how questions map to facts (0.97). It does not saturate: the held-out organisations are asked
with one question wording per fact that training never uses, and their decoys are worded unlike training's.

Example:
    >>> from pipeline.data.sample import generate_sample
    >>> sample = generate_sample(n_train_entities=4, n_eval_entities=2, n_distractors=3, seed=0)
    >>> len(sample.train_triplets) > 0, len(sample.eval_queries) == 2 * len(RELATIONS)
    (True, True)
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

SYLLABLES = [
    "vel", "mor", "ka", "tran", "quil", "zor", "bex", "lun", "dar", "fen", "gro", "hal", "ith", "jor", "kel",
    "mab", "nor", "pry", "rin", "sol", "tov", "ush", "vin", "wex", "yar", "zen", "ost", "cal", "bri", "dov",
]  # fmt: skip
KINDS = [
    "Instruments",
    "Foods",
    "Logistics",
    "Textiles",
    "Robotics",
    "Pharma",
    "Optics",
    "Energy",
    "Mills",
    "Labs",
]
PEOPLE = [
    "Ada Brenn",
    "Tomas Rell",
    "Ines Okafor",
    "Mira Solt",
    "Jun Takeda",
    "Lena Voss",
    "Ravi Menon",
    "Oona Pike",
]
CITIES = [
    "Harlow",
    "Questa",
    "Brindle",
    "Okavo",
    "Tessaly",
    "Marrow Bay",
    "Dunmere",
    "Saltcliff",
    "Ivory Ford",
]
PRODUCTS = [
    "ceramic valves",
    "solar inverters",
    "oat flour",
    "surgical lenses",
    "wool blankets",
    "drone motors",
]
MARKETS = ["hospitals", "farmers", "shipping firms", "schools", "bakeries", "research labs", "railways"]
RIVALS_NOTE = ["a patent dispute", "a price war", "a failed merger", "a supply shortage", "a product recall"]

# relation -> (question templates, document templates). Questions avoid the documents' wording on purpose.
# The last question template of each relation is asked only of held-out organisations (never in training).
RELATIONS: dict[str, tuple[list[str], list[str]]] = {
    "founding": (
        ["who started {e}?", "who is the founder of {e}?", "when did {e} begin?", "who set up {e}?"],
        ["{e} was established in {year} by {person}, who ran it for {n} years."],
    ),
    "location": (
        [
            "where is {e} based?",
            "in which city does {e} have its headquarters?",
            "where can I find {e}?",
            "what town is home to {e}?",
        ],
        ["{e} runs its operations out of a campus in {city}, close to the old harbour."],
    ),
    "products": (
        [
            "what does {e} sell?",
            "which goods are made by {e}?",
            "what is {e}'s main product?",
            "what comes out of {e}'s factories?",
        ],
        ["{e} manufactures {product} that are shipped to {market} across the region."],
    ),
    "staff": (
        [
            "how many employees does {e} have?",
            "how big is the workforce of {e}?",
            "how many people work for {e}?",
            "what is the headcount at {e}?",
        ],
        ["{e} has a payroll of roughly {n}00 people spread over three shifts."],
    ),
    "trouble": (
        [
            "what controversy hit {e}?",
            "what problems did {e} face?",
            "was {e} ever in a scandal?",
            "what went wrong at {e}?",
        ],
        ["{e} made headlines during {note} that hurt its reputation in {year}."],
    ),
}
# relation -> (decoy in training, decoy in the benchmark): a document about the organisation that borrows a
# question's words without answering it, so matching words is not enough. The benchmark's decoys are worded
# unlike the training ones: fine-tuning has to learn what an answer looks like, not which decoy to avoid.
DECOYS: dict[str, tuple[str, str]] = {
    "founding": (
        "{e} started a charity run this spring; the founder of the race hopes it will begin a tradition.",
        "Who started the rumour about {e}? A blogger who set up a fan page in {year}.",
    ),
    "location": (
        "{e} based its new logo on a city skyline drawn by a student from {city}.",
        "Visitors can find {e}'s stand at the trade fair, in the hall next to the headquarters of the fair.",
    ),
    "products": (
        "{e} will sell its old office furniture; the goods were made by a carpenter in {city}.",
        "The main product review of the year praised {e}'s website, which came out in {year}.",
    ),
    "staff": (
        "{e} asked its employees how many people they would like to work with on a team.",
        "The headcount at {e}'s summer picnic was a record, and the workforce voted for a second one.",
    ),
    "trouble": (
        "{e} sponsored a quiz night where one question was about a famous scandal and its controversy.",
        "What went wrong at {e}'s football match? Rain, and problems with the scoreboard.",
    ),
}
DISTRACTOR_TEMPLATES = [
    "The {city} festival drew crowds of visitors who came for music and food in {year}.",
    "A guide to caring for {product} at home, with tips on cleaning and storage.",
    "{person} wrote an essay about the history of {market} in small towns.",
]


@dataclass
class Sample:
    """The generated task: training triplets, and a held-out benchmark in BEIR shape."""

    train_triplets: list[dict[str, str]] = field(default_factory=list)
    corpus: dict[str, str] = field(default_factory=dict)  # the held-out benchmark's documents
    eval_queries: dict[str, str] = field(default_factory=dict)
    eval_qrels: dict[str, dict[str, int]] = field(default_factory=dict)


def _entity_names(rng: random.Random, count: int) -> list[str]:
    names: set[str] = set()
    while len(names) < count:
        stem = "".join(rng.sample(SYLLABLES, rng.choice([2, 3]))).capitalize()
        names.add(f"{stem} {rng.choice(KINDS)}")
    return sorted(names)


def _facts(rng: random.Random) -> dict[str, str]:
    return {
        "year": str(rng.randint(1890, 2015)),
        "person": rng.choice(PEOPLE),
        "n": str(rng.randint(2, 40)),
        "city": rng.choice(CITIES),
        "product": rng.choice(PRODUCTS),
        "market": rng.choice(MARKETS),
        "note": rng.choice(RIVALS_NOTE),
    }


def _documents(entity: str, rng: random.Random) -> dict[str, str]:
    facts = _facts(rng)
    return {rel: rng.choice(templates).format(e=entity, **facts) for rel, (_, templates) in RELATIONS.items()}


def _decoys(entity: str, rng: random.Random, held_out: bool) -> dict[str, str]:
    facts = _facts(rng)
    return {rel: pair[held_out].format(e=entity, **facts) for rel, pair in DECOYS.items()}


def generate_sample(
    n_train_entities: int = 40,
    n_eval_entities: int = 20,
    n_distractors: int = 50,
    negatives_per_query: int = 2,
    seed: int = 42,
) -> Sample:
    """Generate the sample deterministically for ``seed``.

    Training and held-out organisations are disjoint, so no evaluation question (or its answer) is ever
    seen in training. Each training question gets ``negatives_per_query`` triplets whose negatives are
    other facts about the same organisation: ``n_train_entities * len(RELATIONS) * negatives_per_query``.
    """
    if not 1 <= negatives_per_query < len(RELATIONS):
        raise ValueError(
            f"negatives_per_query must be between 1 and {len(RELATIONS) - 1}, got {negatives_per_query}"
        )
    rng = random.Random(seed)
    names = _entity_names(rng, n_train_entities + n_eval_entities)
    rng.shuffle(names)
    train_names, eval_names = names[:n_train_entities], names[n_train_entities:]
    sample = Sample()

    for entity in train_names:
        documents = _documents(entity, rng)
        decoys = _decoys(entity, rng, held_out=False)
        for relation, (questions, _) in RELATIONS.items():
            query = rng.choice(questions[:-1]).format(e=entity)
            # Hard negatives: the organisation's other facts, and the decoy borrowing this question's words.
            others = [documents[other] for other in documents if other != relation] + [decoys[relation]]
            for negative in rng.sample(others, negatives_per_query):
                sample.train_triplets.append(
                    {"query": query, "positive": documents[relation], "negative": negative}
                )

    for e_index, entity in enumerate(eval_names):
        documents = _documents(entity, rng)
        decoys = _decoys(entity, rng, held_out=True)
        for relation, (questions, _) in RELATIONS.items():
            doc_id = f"doc-{e_index:03d}-{relation}"
            query_id = f"q-{e_index:03d}-{relation}"
            sample.corpus[doc_id] = documents[relation]
            sample.corpus[f"decoy-{e_index:03d}-{relation}"] = decoys[relation]
            sample.eval_queries[query_id] = rng.choice(questions).format(e=entity)
            sample.eval_qrels[query_id] = {doc_id: 1}
    for d_index in range(n_distractors):
        template = DISTRACTOR_TEMPLATES[d_index % len(DISTRACTOR_TEMPLATES)]
        sample.corpus[f"noise-{d_index:04d}"] = template.format(**_facts(rng))
    return sample
