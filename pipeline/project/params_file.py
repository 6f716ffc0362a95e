"""Reading ``params.yaml``: overlays (``--config``), ``--set`` overrides, input-path checks, atomic writes.

A run's overrides are written into the file with :func:`write_overrides`, a ruamel.yaml round trip: the
comments, key order and layout stay as the user wrote them, so a run's git ref holds the file a person reads.

The schema they validate against is :mod:`pipeline.project.config`.

Example:
    >>> from pipeline.project.params_file import load_params
    >>> load_params("no-such-file.yaml", {"train.epochs": 3}).train.epochs
    3
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from pipeline.project.config import (
    DEFAULT_PARAMS_FILE,
    ConfigError,
    Origin,
    Params,
    origin_label,
    resolve_path,
)


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``section.key=value`` (the value is YAML: ``2``, ``true``, ``null``, ``[a, b]``).

    Example:
        >>> parse_override("train.epochs=2")
        ('train.epochs', 2)
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} must look like section.key=value")
    return key.strip(), yaml.safe_load(value)


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections as dotted keys, the form ``--set`` and ``dvc exp run -S`` take.

    Example:
        >>> flatten({"train": {"epochs": 1, "sampler": {"seed": 2}}})
        {'train.epochs': 1, 'train.sampler.seed': 2}
    """
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Return a copy of ``raw`` with dotted-key overrides set (``{"train.epochs": 2}``)."""
    merged = _deep_copy(raw)
    for dotted, value in (overrides or {}).items():
        parts = dotted.split(".")
        node = merged
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {dotted!r}: {part!r} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return merged


def merge_overlay(raw: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with ``overlay``'s values laid over it, section by section (a copy; neither is changed).

    Example:
        >>> merge_overlay({"train": {"epochs": 1, "seed": 1}}, {"train": {"epochs": 3}})
        {'train': {'epochs': 3, 'seed': 1}}
    """
    merged = _deep_copy(raw)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_overlay(merged[key], value)
        else:
            merged[key] = _deep_copy(value) if isinstance(value, dict) else value
    return merged


def _deep_copy(raw: dict[str, Any]) -> dict[str, Any]:
    return {key: _deep_copy(value) if isinstance(value, dict) else value for key, value in raw.items()}


def read_params_file(path: str | os.PathLike[str] = DEFAULT_PARAMS_FILE) -> dict[str, Any]:
    """The raw mapping in a params file; a missing file is an empty mapping (all defaults)."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(raw).__name__}")
    return raw


def load_params(
    path: str | os.PathLike[str] = DEFAULT_PARAMS_FILE,
    overrides: dict[str, Any] | None = None,
    *,
    overlays: list[str | os.PathLike[str]] | None = None,
    check_paths: bool = True,
    overrides_source: str = "--set",
) -> Params:
    """Read, lay overlays over, override, validate; relative paths are checked against the params' folder.

    An error names the key and where its value came from: the params file, the overlay that set it last, or
    ``--set <key>`` (``overrides_source`` names what the overrides were for another caller).

    Args:
        path: The params file (a missing file means all defaults).
        overrides: Dotted keys set last (``{"train.epochs": 3}``).
        overlays: YAML files with the same sections (``configs/scifact.yaml``), merged in order; a missing
            overlay is an error, unlike a missing params file.
        check_paths: Check that the configured local inputs exist.
        overrides_source: How errors name an override's origin (``--set train.epochs: ...``).

    Example:
        >>> load_params("no-such-file.yaml", {"train.epochs": 3}).train.epochs
        3
        >>> load_params("no-such-file.yaml", {"train.epochs": "two"})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        pipeline.project.config.ConfigError: --set train.epochs: Input should be a valid int... (got 'two')
    """
    raw = read_params_file(path)
    origins = Origins(str(path))
    origins.record(raw, str(path))
    for overlay in overlays or []:
        if not Path(overlay).is_file():
            raise ConfigError(f"{overlay}: overlay file not found")
        layer = read_params_file(overlay)
        raw = merge_overlay(raw, layer)
        origins.record(layer, str(overlay))
    raw = apply_overrides(raw, overrides)
    for dotted in overrides or {}:
        origins.set(dotted, f"{overrides_source} {dotted}")
    params = Params.model_validate(raw, source=origins)
    if check_paths:
        check_input_paths(params, base=Path(path).resolve().parent, source=origins)
    return params


class Origins:
    """Which source set each dotted key last (the params file, an overlay, an override), for error messages.

    Example:
        >>> origins = Origins("params.yaml")
        >>> origins.record({"train": {"epochs": 2}}, "configs/a.yaml")
        >>> origins.set("train.seed", "--set train.seed")
        >>> origins("train.epochs"), origins("train.seed"), origins("train"), origins("index.nbits")
        ('configs/a.yaml', '--set train.seed', '--set train.seed', 'params.yaml')
    """

    def __init__(self, default: str) -> None:
        self.default = default
        self._sources: dict[str, str] = {}

    def set(self, dotted: str, source: str) -> None:
        self._sources.pop(dotted, None)  # re-inserted: the dict's order is the order sources were applied
        self._sources[dotted] = source

    def record(self, layer: Mapping[str, Any], source: str) -> None:
        """Each key ``layer`` sets (its leaves, or a section set to a non-mapping) came from ``source``."""
        for dotted in flatten(layer):
            self.set(dotted, source)

    def __call__(self, key: str) -> str:
        # The key itself or a section above it (``--set train={...}``), else the last source that set a key
        # inside it (a section-level rule such as "source is 'kd' but prepare.kd.scores is not set").
        parts = key.split(".")
        for end in range(len(parts), 0, -1):
            if (found := self._sources.get(".".join(parts[:end]))) is not None:
                return found
        inside = [source for dotted, source in self._sources.items() if dotted.startswith(f"{key}.")]
        return inside[-1] if inside else self.default


def check_input_paths(params: Params, base: Path, source: str | Origin = DEFAULT_PARAMS_FILE) -> None:
    """Every local input the configured source needs must exist; Hub ids are left to the loaders."""
    for key, value, must_be_local in _input_paths(params):
        if value is None:
            continue
        resolved = resolve_path(value, base)
        if resolved.exists():
            continue
        if must_be_local or _looks_local(value):
            where = origin_label(source, key)
            raise ConfigError(f"{where}: path {value!r} does not exist (looked at {resolved})")


def _input_paths(params: Params) -> list[tuple[str, str | None, bool]]:
    # (key, configured value, must be a local path rather than a Hub id) for every input the params read
    prepare = params.prepare
    checks: list[tuple[str, str | None, bool]] = []
    if prepare.source == "triplets":
        checks.append(("prepare.triplets.path", prepare.triplets.path, False))
    elif prepare.source == "kd":
        checks += [
            ("prepare.kd.scores", prepare.kd.scores, True),
            ("prepare.kd.queries", prepare.kd.queries, True),
            ("prepare.kd.documents", prepare.kd.documents, True),
        ]
    elif prepare.source == "beir":
        checks.append(("prepare.beir.folder", prepare.beir.folder, True))
    if params.index.corpus:
        checks.append(("index.corpus", params.index.corpus, True))
    if params.quality.dataset:
        checks.append(("quality.dataset", params.quality.dataset, True))
    return checks


def untracked_inputs(params: Params, base: Path) -> list[tuple[str, Path]]:
    """The configured local inputs outside the paths dvc.yaml watches: ``(key, path)`` pairs it would not.

    dvc.yaml can only name fixed keys as dependencies, so every input must sit in ``prepare.data``; the
    index's corpus may also sit in ``index.data``, which only the index stage depends on.

    Example:
        >>> params = Params.model_validate({"index": {"corpus": "/elsewhere/corpus.jsonl"}})
        >>> untracked_inputs(params, Path("/project"))
        [('index.corpus', PosixPath('/elsewhere/corpus.jsonl'))]
        >>> untracked_inputs(Params.model_validate({"index": {"corpus": "corpus/c.jsonl"}}), Path("/project"))
        []
    """
    data_root = resolve_path(params.prepare.data, base).resolve()
    corpus_roots = [data_root, resolve_path(params.index.data, base).resolve()]
    outside = []
    for key, value, must_be_local in _input_paths(params):
        if value is None or not (must_be_local or _looks_local(value) or resolve_path(value, base).exists()):
            continue  # a Hub dataset id: DVC cannot watch it
        path = resolve_path(value, base).resolve()
        watched = corpus_roots if key == "index.corpus" else [data_root]
        if not any(path == root or root in path.parents for root in watched):
            outside.append((key, path))
    return outside


def check_tracked_inputs(params: Params, base: Path, source: str = DEFAULT_PARAMS_FILE) -> None:
    """Under DVC: refuse inputs outside the watched paths (a change there would silently re-run nothing)."""
    outside = untracked_inputs(params, base)
    if outside:
        listed = ", ".join(f"{key} ({path})" for key, path in outside)
        raise ConfigError(
            f"{source}: {listed} outside prepare.data ({params.prepare.data}), the path dvc.yaml watches: "
            "set prepare.data to a folder that holds every input"
            + (
                f" (index.corpus may also sit in index.data, {params.index.data})"
                if any(key == "index.corpus" for key, _ in outside)
                else ""
            )
        )


def _looks_local(value: str) -> bool:
    return value.startswith((".", "/", "~")) or Path(value).suffix in {
        ".jsonl",
        ".json",
        ".csv",
        ".parquet",
        ".gz",
    }


def write_params(params: Params | dict[str, Any], path: str | os.PathLike[str] = DEFAULT_PARAMS_FILE) -> None:
    """Write params atomically (temp file + rename), so a reader never sees half a file."""
    from pipeline.project.io import atomic_write_text

    data = params.model_dump(mode="json") if isinstance(params, Params) else params
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))


def get_dotted(raw: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    """``(True, value)`` at a dotted key of a raw params mapping, ``(False, None)`` where it is not set.

    Example:
        >>> get_dotted({"train": {"epochs": 2}}, "train.epochs"), get_dotted({}, "train.epochs")
        ((True, 2), (False, None))
    """
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _round_trip_yaml() -> Any:
    from ruamel.yaml import YAML

    yaml_rt = YAML()  # round trip: comments, order, flow lists and quoting are kept
    yaml_rt.preserve_quotes = True
    yaml_rt.width = 4096  # never re-wrap a long line (a comment or a path)
    # ruamel writes None as an empty value; the committed file spells it ``null``.
    yaml_rt.representer.add_representer(
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    return yaml_rt


def _like(old: Any, new: Any) -> Any:
    """``new`` in ``old``'s style: a list that was written ``[a, b]`` stays on one line."""
    from ruamel.yaml.comments import CommentedSeq

    if isinstance(old, CommentedSeq) and isinstance(new, list) and old.fa.flow_style():
        seq = CommentedSeq(new)
        seq.fa.set_flow_style()
        return seq
    return new


def write_overrides(path: str | os.PathLike[str], overrides: Mapping[str, Any]) -> None:
    r"""Set dotted keys in a params file in place, keeping its comments and layout; atomic.

    Only the values named change: every other line, comment included, is written back as it was (a
    ruamel.yaml round trip). A missing file starts empty.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "params.yaml"
        >>> _ = path.write_text("train:\n  epochs: 1   # one pass\n  max_steps: null\n")
        >>> write_overrides(path, {"train.max_steps": 5, "register.margin": 0.01})
        >>> print(path.read_text(), end="")
        train:
          epochs: 1   # one pass
          max_steps: 5
        register:
          margin: 0.01
    """
    import io

    from ruamel.yaml.comments import CommentedMap

    from pipeline.project.io import atomic_write_text

    path = Path(path)
    yaml_rt = _round_trip_yaml()
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    data = yaml_rt.load(text) if text.strip() else None
    if data is None:
        data = CommentedMap()
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    for dotted, value in overrides.items():
        *sections, key = dotted.split(".")
        node = data
        for part in sections:
            child = node.get(part)
            if child is None:
                child = node[part] = CommentedMap()
            if not isinstance(child, dict):
                raise ConfigError(f"override {dotted!r}: {part!r} is a value, not a section")
            node = child
        node[key] = _like(node.get(key), value)
    buffer = io.StringIO()
    yaml_rt.dump(data, buffer)
    atomic_write_text(path, buffer.getvalue())
