"""Data curation: the ``Scorer`` and ``Embedder`` interfaces, and the runner behind
``platform curate``.

``platform curate`` streams record files in chunks;
every scorer sees each chunk once to score it, and scorers that need the whole corpus
first (counts, thresholds, clusters, near-duplicate graphs) see every chunk once before
that in a first pass (``fit``). Scores are columns named ``<scorer>.<column>``; a
scorer that filters returns a boolean ``keep`` column, and a record is kept when every
filtering scorer keeps it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from autoplat.core.config import PluginsSection
from autoplat.core.errors import ConfigError, DataError, PluginError
from autoplat.core.interfaces import Chunk, CurationContext, Embedder, Options, Scorer

if TYPE_CHECKING:
    from autoplat.core.registry import Registry
    from autoplat.core.store import Store


def record_uniform(seed: int, ids: np.ndarray) -> np.ndarray:
    """A uniform draw in [0, 1) per record id, the same however the corpus is chunked."""
    with np.errstate(over="ignore"):  # splitmix64
        x = np.asarray(ids, dtype=np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def run_scorer(
    scorer: Scorer, chunks: list[Chunk], context: CurationContext | None = None
) -> dict[str, np.ndarray]:
    """Run a scorer's whole lifecycle over in-memory chunks; the columns, concatenated.

    For tests and notebooks; ``platform curate`` does the same over files, resumably.
    Chunks without embeddings get them from ``context.embed`` when the scorer needs them.
    """
    if context is None:
        with tempfile.TemporaryDirectory(prefix="autoplat-curate-") as work:
            return run_scorer(scorer, chunks, bare_context(Path(work)))
    if "embedding" in scorer.needs:
        for chunk in chunks:
            if chunk.embeddings is None and len(chunk):
                items = chunk.text if chunk.text is not None else chunk.images
                chunk.embeddings = np.asarray(context.embed(items), dtype=np.float32)
    scorer.setup(context)
    if scorer.two_pass:
        for chunk in chunks:
            scorer.fit(chunk)
        scorer.finish_fit()
    parts = [scorer.score(chunk) for chunk in chunks]
    names = list(dict.fromkeys(name for part in parts for name in part))
    return {name: np.concatenate([part[name] for part in parts]) for name in names}


def bare_context(work_dir: Path, seed: int = 0) -> CurationContext:
    """A context with no embedder and no other files (scorers that need neither), whose
    scorers keep their files under ``work_dir``."""

    def no_embedder(items: list[str]) -> np.ndarray:
        raise ConfigError("this scorer needs embeddings: add an [embedder] section")

    def no_files(path: str | Path, column: str) -> Iterator[list[str]]:
        raise ConfigError(f"cannot read {path}: no record reader in this context")

    return CurationContext(
        embed=no_embedder,
        read_texts=no_files,
        work_dir=work_dir,
        seed=seed,
    )


# -- scorer states on disk: JSON and .npz, never pickle ------------------------------------
ARRAY = "$array"  # {"$array": key} in fit.json stands for the array ``key`` of fit.npz
FIT_JSON, FIT_ARRAYS = "fit.json", "fit.npz"


def state_value(state: Any, key: str, types: type | tuple[type, ...]) -> Any:
    """``state[key]`` when it is of ``types``; ValueError naming the key otherwise."""
    if not isinstance(state, dict) or key not in state:
        raise ValueError(f"no '{key}'")
    value = state[key]
    if not isinstance(value, types):
        raise ValueError(f"'{key}' is a {type(value).__name__}")
    return value


def state_array(
    state: Any, key: str, kinds: str, ndim: int = 1, rows: int | None = None
) -> np.ndarray:
    """``state[key]`` when it is an array of a dtype kind in ``kinds`` ("b", "i", "f", ...)
    with ``ndim`` dimensions (and ``rows`` rows); ValueError naming the key otherwise."""
    value = state_value(state, key, np.ndarray)
    if value.dtype.kind not in kinds or value.ndim != ndim or rows not in (None, len(value)):
        want = f"{ndim}-d array of kind '{kinds}'" + ("" if rows is None else f", {rows} rows")
        raise ValueError(f"'{key}' is a {value.dtype} array of shape {value.shape}, not a {want}")
    return value


def _encode(value: Any, arrays: dict[str, np.ndarray], where: str) -> Any:
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise PluginError(f"{where}: an array of Python objects cannot be saved without pickle")
        arrays[key := f"a{len(arrays)}"] = value
        return {ARRAY: key}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        if ARRAY in value or not all(isinstance(k, str) for k in value):
            raise PluginError(f"{where}: dict keys must be strings other than '{ARRAY}'")
        return {k: _encode(v, arrays, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise PluginError(
        f"{where} is a {type(value).__name__}; a scorer's state holds dicts, lists, numbers, "
        "strings, None and numpy arrays only (it is saved as JSON and .npz, not pickle)"
    )


def _decode(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, dict):
        if ARRAY not in value:
            return {k: _decode(v, arrays) for k, v in value.items()}
        if len(value) != 1 or not isinstance(value[ARRAY], str) or value[ARRAY] not in arrays:
            raise ValueError(f"{json.dumps(value)[:80]} names no array of {FIT_ARRAYS}")
        return arrays[value[ARRAY]]
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    return value


def save_states(folder: Path, states: dict[str, Any]) -> None:
    """Write scorers' ``state()`` (by name) to ``fit.json``, with their arrays in ``fit.npz``,
    each durably; PluginError when a state holds anything else."""
    from autoplat.core.records import durable, write_json

    arrays: dict[str, np.ndarray] = {}
    tree = {name: _encode(st, arrays, f"scorer '{name}': state()") for name, st in states.items()}
    with durable(folder / FIT_ARRAYS) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    write_json(folder / FIT_JSON, {"format": 1, "scorers": tree})


def load_states(folder: Path) -> dict[str, Any]:
    """What ``save_states`` wrote (arrays read with ``allow_pickle=False``); when it is
    missing or malformed, ``ValueError(path, what is wrong)``."""
    path, npz = folder / FIT_JSON, folder / FIT_ARRAYS
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        old = (folder / "fit.pkl").exists()
        why = " (fit.pkl is an older format, never loaded: unpickling is unsafe)" if old else ""
        raise ValueError(path, f"missing{why}") from None
    except (OSError, ValueError, RecursionError) as exc:
        raise ValueError(path, f"not valid JSON ({exc})") from None
    scorers = doc.get("scorers") if isinstance(doc, dict) else None
    if not isinstance(scorers, dict) or doc.get("format") != 1:
        raise ValueError(path, 'not a scorer state file ({"format": 1, "scorers": ...})')
    try:
        with np.load(npz, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(npz, f"not a readable .npz of plain arrays ({exc})") from None
    try:
        return {name: _decode(state, arrays) for name, state in scorers.items()}
    except (ValueError, RecursionError) as exc:
        raise ValueError(path, str(exc)) from None


# -- the `platform curate` config ----------------------------------------------------
class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CurateStudySection(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    seed: int = Field(0, ge=0)
    storage: str | None = None


class InputSection(_Section):
    path: str  # a record file or a folder of images, relative to where `platform` runs
    format: Literal["auto", "parquet", "jsonl", "csv", "images"] = "auto"
    text: str | None = None  # the column (JSONL key) holding the text
    chunk_size: int = Field(4096, ge=1, le=1_000_000)


class OutputSection(_Section):
    dir: str | None = None  # default: runs/curate/<study name>


class EmbedderSection(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str


class CurateConfig(_Section):
    study: CurateStudySection
    input: InputSection
    output: OutputSection = OutputSection()
    embedder: EmbedderSection | None = None
    scorers: dict[str, dict[str, Any]] = Field(min_length=1)
    plugins: PluginsSection = Field(default_factory=PluginsSection)  # local plugin modules


@dataclass
class ResolvedCurate:
    """A validated `platform curate` config with its plugins looked up."""

    path: Path
    config: CurateConfig
    raw: dict[str, Any]
    scorers: list[tuple[type[Scorer], Options]]
    embedder: tuple[type[Embedder], Options] | None

    @property
    def out_dir(self) -> Path:
        return Path(self.config.output.dir or Path("runs") / "curate" / self.config.study.name)

    def fingerprint(self) -> str:
        """What must not change for ``--resume`` to continue a run."""
        keep = {k: v for k, v in self.raw.items() if k != "study"}
        keep["seed"] = self.config.study.seed
        return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()


def load_curate_config(path: str | Path, registry: Registry) -> ResolvedCurate:
    """Read and validate a `platform curate` config; ConfigError says file:line: key."""
    from autoplat.core.config import _plugin_options, _validation_message, read_config

    path = Path(path)
    raw, source = read_config(path)
    try:
        config = CurateConfig.model_validate(raw)
    except ValidationError as exc:
        raise _validation_message(exc, CurateConfig, source) from None
    scorers = []
    for name, options in config.scorers.items():
        cls = source.lookup(registry, "scorers", name, ("scorers", name))
        scorers.append((cls, _plugin_options(cls.Options, options, source, f"scorers.{name}")))
    embedder = None
    if config.embedder is not None:
        cls = source.lookup(registry, "embedders", config.embedder.name, ("embedder", "name"))
        options = _plugin_options(
            cls.Options, config.embedder.model_extra or {}, source, "embedder"
        )
        embedder = (cls, options)
    needy = [cls.name for cls, _ in scorers if "embedding" in cls.needs]
    if needy and embedder is None:
        raise source.error(
            ("scorers", needy[0]),
            'needs embeddings: add an [embedder] section, e.g. name = "minilm"',
        )
    image_input = config.input.format == "images" or (
        config.input.format == "auto" and Path(config.input.path).is_dir()
    )
    if embedder is not None and (embedder[0].modality == "image") != image_input:
        raise source.error(
            ("embedder", "name"),
            f"embedder '{embedder[0].name}' embeds {embedder[0].modality}s, but the input "
            f"holds {'images' if image_input else 'text'}; pick a matching embedder",
        )
    for cls, _ in scorers:
        if image_input and "text" in cls.needs:
            raise source.error(("scorers", cls.name), "scores text; the input holds images")
    if not image_input and not config.input.text:
        raise source.error(("input",), 'name the text column: text = "..."')
    return ResolvedCurate(path, config, raw, scorers, embedder)


# -- the run ---------------------------------------------------------------------------
# (phase "fit" or "score", records done, records in all); ("fit", 0, 0): reading the input
Progress = Callable[[str, int, int], None]


@dataclass
class CurationResult:
    records: int
    kept: int
    scores_path: Path
    kept_path: Path
    per_scorer: dict[str, dict[str, Any]]  # name -> {"kept": n, "summary": {...}}


class RunState(BaseModel):
    """``<out>/state.json``: how far a run got; each count is durable on disk when saved."""

    model_config = ConfigDict(extra="forbid", strict=True)
    fingerprint: str
    phase: Literal["fit", "score", "merge", "done"]
    chunks: int = Field(ge=0)  # chunks whose part files are written
    records: int = Field(ge=0)  # records in those chunks (rows of scores.parquet)
    kept: int = Field(ge=0)  # records kept by every scorer (rows of the kept file)
    kept_by: dict[str, int]

    @model_validator(mode="after")
    def _counts(self) -> RunState:
        if any(not 0 <= n <= self.records for n in [self.kept, *self.kept_by.values()]):
            raise ValueError("more records kept than scored")
        return self


class _Run:
    """One `platform curate` run over its output folder; resumable chunk by chunk.

    Crash safety: every file is written to a temporary name, fsynced and renamed; the
    state file moves on only after the data it counts is durable; the part files are
    deleted only after the merged outputs are durable and the state says "done". Resume
    checks the state, the scorers' saved fit and the row counts of the outputs first.
    """

    def __init__(self, resolved: ResolvedCurate, store: Store, resume: bool) -> None:
        from autoplat.core.records import RecordFile, kept_suffix

        cfg = resolved.config
        self.resolved, self.store = resolved, store
        self.source = RecordFile(
            cfg.input.path, cfg.input.text, cfg.input.chunk_size, cfg.input.format
        )
        self.out = resolved.out_dir
        if (
            self.out.resolve() == self.source.path.resolve()
            or self.source.path.resolve().is_relative_to(self.out.resolve())
        ):
            raise ConfigError(f"[output].dir '{self.out}' holds the input; pick another folder")
        self.parts_dir, self.work = self.out / "parts", self.out / "work"
        self.state_path = self.out / "state.json"
        self.scores_path = self.out / "scores.parquet"
        self.kept_path = self.out / f"kept{kept_suffix(self.source)}"
        self.state = self._open_state(resume)
        self.seed = cfg.study.seed
        self.embedder = None
        if resolved.embedder is not None:
            cls, options = resolved.embedder
            self.embedder = cls(options, self.seed)
        self.scorers = [cls(options, self.seed) for cls, options in resolved.scorers]
        context = CurationContext(
            embed=self._embed, read_texts=self._read_texts, work_dir=self.work, seed=self.seed
        )
        for scorer in self.scorers:
            (self.work / scorer.name).mkdir(parents=True, exist_ok=True)
            scorer.setup(replace(context, work_dir=self.work / scorer.name))
        if self.state["phase"] != "fit":
            self._check_resume()

    def _damaged(self, path: Path | str, detail: str) -> DataError:
        return DataError(
            f"{path}: {detail}; it was changed or damaged outside autoplat. Restore it, or "
            f"run the curation again into a new [output].dir (or delete {self.out}) "
            "without --resume"
        )

    def _read_state(self) -> dict[str, Any]:
        try:
            return RunState.model_validate_json(self.state_path.read_bytes()).model_dump()
        except OSError as exc:
            raise self._damaged(self.state_path, f"unreadable ({exc.strerror})") from None
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"])
            detail = f"{where}: {error['msg']}" if where else error["msg"]
            raise self._damaged(self.state_path, f"not a curation state ({detail})") from None

    def _open_state(self, resume: bool) -> dict[str, Any]:
        fingerprint = self.resolved.fingerprint()
        if self.state_path.exists():
            state = self._read_state()
            if not resume:
                raise ConfigError(
                    f"{self.out} already holds a curation run ({state['phase']}); continue it "
                    "with --resume, or set [output].dir to a new folder (or delete this one)"
                )
            if state["fingerprint"] != fingerprint:
                raise ConfigError(
                    f"{self.resolved.path}: the config changed since the run in {self.out} "
                    "started; --resume needs the same [input], [embedder] and [scorers] "
                    "(or set [output].dir to a new folder)"
                )
            return state
        if self.out.exists() and any(self.out.iterdir()):
            raise ConfigError(
                f"[output].dir '{self.out}' exists and is not empty; pick a new folder"
            )
        state = {
            "fingerprint": fingerprint,
            "phase": "fit",
            "chunks": 0,
            "records": 0,
            "kept": 0,
            "kept_by": {},
        }
        try:
            self.parts_dir.mkdir(parents=True, exist_ok=True)
            self.work.mkdir(parents=True, exist_ok=True)
            self._save_state(state)
        except OSError as exc:
            raise ConfigError(
                f"[output].dir '{self.out}': cannot write there ({exc.strerror}); pick a "
                "writable folder with room"
            ) from None
        return state

    def _save_state(self, state: dict[str, Any]) -> None:
        from autoplat.core.records import write_json

        write_json(self.state_path, state)

    # -- checks on --resume -------------------------------------------------------------
    def _check_resume(self) -> None:
        """Restore the scorers' fit and check the files the state counts on, before
        anything is written: a DataError says which file is wrong and how to go on."""
        self._load_fit()
        missing = [path for path in self._part_paths() if not path.exists()]
        if missing and self.state["phase"] == "score":
            raise self._damaged(missing[0], "missing, though the state counts its chunk")
        if missing and (problem := self._output_problem()):
            path, detail = problem
            raise self._damaged(
                path, f"{detail}, and the part files it merges are gone ({missing[0]})"
            )

    def _load_fit(self) -> None:
        fitting = [s for s in self.scorers if s.two_pass]
        if not fitting:
            return
        try:
            states = load_states(self.work)
        except ValueError as exc:
            raise self._damaged(*exc.args) from None
        for scorer in fitting:
            if scorer.name not in states:
                raise self._damaged(self.work / FIT_JSON, f"no state of scorer '{scorer.name}'")
            try:
                scorer.load_state(states[scorer.name])
            except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
                detail = f"no {exc}" if isinstance(exc, KeyError) else str(exc)
                where = self.work / FIT_JSON
                raise self._damaged(where, f"scorer '{scorer.name}': {detail}") from None

    def _part_paths(self, index: int | None = None) -> list[Path]:
        """The part files of chunk ``index`` (of every chunk the state counts, when None)."""
        from autoplat.core.records import kept_suffix

        if index is None:
            return [p for i in range(self.state["chunks"]) for p in self._part_paths(i)]
        suffix = kept_suffix(self.source)
        return [
            self.parts_dir / f"scores-{index:06d}.parquet",
            self.parts_dir / f"kept-{index:06d}{suffix}",
        ]

    def _output_problem(self) -> tuple[Path, str] | None:
        """The merged output whose row count is wrong, and how (None when both match)."""
        from autoplat.core.records import count_rows

        for path, fmt, recorded in (
            (self.scores_path, "parquet", self.state["records"]),
            (self.kept_path, self.source.format, self.state["kept"]),
        ):
            found = count_rows(path, fmt, self.source.delimiter)
            if found != recorded:
                held = "missing or unreadable" if found is None else f"holds {found} records"
                return path, f"{held} where the run recorded {recorded}"
        return None

    # -- context for scorers ------------------------------------------------------
    def _embed(self, items: list[str]) -> np.ndarray:
        if self.embedder is None:
            raise ConfigError(f"{self.resolved.path}: a scorer needs embeddings: add [embedder]")
        return np.asarray(self.embedder.embed(items), dtype=np.float32)

    def _read_texts(self, path: str | Path, column: str) -> Iterator[list[str]]:
        from autoplat.core.records import RecordFile

        return RecordFile(path, column, self.resolved.config.input.chunk_size).texts()

    def _with_embeddings(self, index: int, chunk: Chunk) -> Chunk:
        """The chunk with its embeddings, computed once and cached on disk (a cache file
        that does not read back as one row per record is computed again)."""
        from autoplat.core.records import durable

        if not any("embedding" in s.needs for s in self.scorers) or not len(chunk):
            return chunk
        cache = self.work / "embeddings" / f"{index:06d}.npy"
        try:
            chunk.embeddings = np.load(cache, allow_pickle=False)
            if chunk.embeddings.ndim != 2 or len(chunk.embeddings) != len(chunk):
                raise ValueError(cache)
        except (OSError, ValueError, EOFError):
            chunk.embeddings = self._embed(chunk.text if chunk.text is not None else chunk.images)
            cache.parent.mkdir(exist_ok=True)
            with durable(cache) as tmp, open(tmp, "wb") as f:
                np.save(f, chunk.embeddings)
        return chunk

    # -- passes ---------------------------------------------------------------------
    def fit(self, progress: Progress) -> None:
        if self.state["phase"] != "fit":
            return  # the fit was restored by _check_resume
        progress("fit", 0, 0)  # reading the input: its records are counted
        total = len(self.source)
        if not total:
            raise DataError(f"{self.source.path} holds no records: nothing to curate")
        fitting = [s for s in self.scorers if s.two_pass]
        if fitting:
            done = 0
            progress("fit", done, total)
            for index, part in enumerate(self.source.parts()):
                chunk = self._with_embeddings(index, part.chunk)
                for scorer in fitting:
                    scorer.fit(chunk)
                done += len(chunk)
                progress("fit", done, total)
            for scorer in fitting:
                scorer.finish_fit()
            save_states(self.work, {s.name: s.state() for s in fitting})
        self.state["phase"] = "score"
        self._save_state(self.state)

    def score(self, progress: Progress, on_chunk: Callable[[dict[str, Any]], None]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from autoplat.core.records import durable, write_kept

        if self.state["phase"] != "score":
            return
        total = len(self.source)
        progress("score", self.state["records"], total)
        first = self.state["chunks"]
        for index, part in enumerate(self.source.parts(skip=first), first):
            chunk = self._with_embeddings(index, part.chunk)
            columns: dict[str, np.ndarray] = {"id": chunk.ids}
            keep = np.ones(len(chunk), dtype=bool)
            kept_by = dict(self.state["kept_by"])
            for scorer in self.scorers:
                for name, values in scorer.score(chunk).items():
                    values = np.asarray(values)
                    if len(values) != len(chunk):
                        raise RuntimeError(
                            f"scorer {scorer.name}: {len(values)} values for {len(chunk)} records"
                        )
                    columns[f"{scorer.name}.{name}"] = values
                    if name == "keep":
                        keep &= values.astype(bool)
                        kept_by[scorer.name] = kept_by.get(scorer.name, 0) + int(values.sum())
            columns["keep"] = keep
            scores_part, kept_part = self._part_paths(index)
            with durable(scores_part) as tmp:
                pq.write_table(pa.table(columns), tmp)
            write_kept(self.source, part, keep, kept_part)
            self.state["chunks"] = index + 1
            self.state["records"] += len(chunk)
            self.state["kept"] += int(keep.sum())
            self.state["kept_by"] = kept_by
            self._save_state(self.state)
            progress("score", self.state["records"], total)
            on_chunk(self.state)
        self.state["phase"] = "merge"
        self._save_state(self.state)

    def merge(self) -> tuple[Path, Path]:
        """Merge the parts into the outputs (unless they are already whole), record that
        the run is done, then delete the part files (only those this run wrote)."""
        from autoplat.core.records import merge_parts

        if self._output_problem() is not None:
            scores, kept = self._part_paths()[::2], self._part_paths()[1::2]
            merge_parts(scores, self.scores_path, "parquet")
            header = self.source.header_line() if self.source.format == "csv" else None
            merge_parts(kept, self.kept_path, self.source.format, header)
            if problem := self._output_problem():
                path, detail = problem
                raise self._damaged(path, f"{detail}, merged from parts that do not add up")
        if self.state["phase"] != "done":
            self.state["phase"] = "done"
            self._save_state(self.state)
        self._remove_parts()
        return self.scores_path, self.kept_path

    def _remove_parts(self) -> None:
        for path in self._part_paths():
            path.unlink(missing_ok=True)
            path.with_name(path.name + ".tmp").unlink(missing_ok=True)
        if self.parts_dir.is_dir() and not any(self.parts_dir.iterdir()):
            self.parts_dir.rmdir()


def run_curation(
    resolved: ResolvedCurate,
    store: Store,
    resume: bool = False,
    progress: Progress | None = None,
) -> CurationResult:
    """Score every record with every scorer, write ``scores.parquet`` and the kept subset
    to the output folder, and record the run as a ``curate`` study in the store.

    The input is only read. An interrupted run continues with ``resume=True``: the first
    pass (fit) starts over, with embeddings already computed read back from the cache;
    the scoring pass continues at the first chunk not yet written; a crash in the merge
    is repaired from the part files. The study is held under the store's driver lease.
    """
    cfg = resolved.config
    run = _Run(resolved, store, resume)
    study = store.find_study(cfg.study.name)
    if study is not None and not resume:
        raise ConfigError(
            f"study '{cfg.study.name}' already exists in {store.url}; use --resume or a new "
            "[study].name"
        )
    if study is None:
        study = store.create_study(
            cfg.study.name,
            kind="curate",
            metric="kept_fraction",
            direction="maximize",
            target_trials=len(run.scorers),
            config=json.dumps(resolved.raw, default=str),
        )
    with store.lease(study.id):
        return _run_study(run, store, study.id, progress or (lambda phase, done, total: None))


def _run_study(run: _Run, store: Store, study_id: int, progress: Progress) -> CurationResult:
    """The passes of ``run`` for the study (its lease held), recorded in the store."""
    from autoplat.core.errors import StoreFault
    from autoplat.core.store import StudyState, TrialState

    store.set_study_state(study_id, StudyState.RUNNING)
    trials = {t.params_dict.get("scorer"): t for t in store.trials(study_id)}
    for scorer in run.scorers:
        if scorer.name not in trials:
            params = {"scorer": scorer.name, **scorer.options.model_dump(mode="json")}
            trials[scorer.name] = store.start_trial(study_id, params)

    def on_chunk(state: dict[str, Any]) -> None:
        for scorer in run.scorers:
            metrics = {
                "records": state["records"],
                "kept": state["kept_by"].get(scorer.name, state["records"]),
            }
            store.add_metrics(trials[scorer.name].id, 0, metrics)

    try:
        run.fit(progress)
        run.score(progress, on_chunk)
        scores, kept = run.merge()
    except (KeyboardInterrupt, StoreFault, OSError) as exc:
        with contextlib.suppress(StoreFault):  # the store may be what failed
            store.set_study_state(study_id, StudyState.INTERRUPTED)
        if isinstance(exc, OSError):  # disk full, a folder gone: nothing lost, resumable
            raise StoreFault(
                f"curation stopped: {exc.filename or run.out}: {exc.strerror or exc}; fix "
                "that (free space, permissions), then continue with --resume"
            ) from None
        raise
    except Exception as exc:
        for trial in trials.values():
            store.finish_trial(trial.id, TrialState.FAIL, error=f"{type(exc).__name__}: {exc}")
        store.set_study_state(study_id, StudyState.FAILED)
        raise
    state = run.state
    per_scorer = {}
    for scorer in run.scorers:
        kept_n = state["kept_by"].get(scorer.name, state["records"])
        summary = scorer.summary()
        per_scorer[scorer.name] = {"kept": kept_n, "summary": summary}
        trial = trials[scorer.name]
        store.add_metrics(trial.id, 0, {"records": state["records"], "kept": kept_n})
        store.set_trial_attrs(
            trial.id, summary=summary, run={"records": state["records"], "kept": state["kept"]}
        )
        fraction = kept_n / state["records"] if state["records"] else 0.0
        store.finish_trial(trial.id, TrialState.COMPLETE, value=fraction)
    for kind, path in (("scores", scores), ("kept", kept)):
        if not store.artifacts(study_id, kind=kind):
            store.add_artifact(study_id, None, kind, str(path))
    store.set_study_state(study_id, StudyState.FINISHED)
    return CurationResult(state["records"], state["kept"], scores, kept, per_scorer)
