"""On-disk store of region annotations: computed once, looked up forever.

Layout: a folder of Parquet shards (the ``datasets`` / Arrow schema :data:`ANNOTATION_FEATURES`, one row
per image). Writes are append-only: every :meth:`AnnotationStore.flush` writes a NEW shard to a hidden
temporary file in the same folder, fsyncs it and publishes it with ``os.replace`` (atomic on POSIX), so a
crash (even ``kill -9``) leaves either the whole shard or nothing; half-written temporary files are never
read and are removed by :meth:`AnnotationStore.compact`. Several processes can write into one store at
once (each writes its own shards). :meth:`AnnotationStore.compact` merges all shards into one (again
atomically; duplicates of a key, e.g. from a crash during a previous compaction, are dropped).

Keys (:class:`AnnotationKey`): image content hash, partition settings (or the label map's hash), MLLM
id + adapter/weights digest, prompt fingerprint. The scoring model's processor calls
:func:`cached_annotate`, which looks up before it computes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Features, Value
from datasets import Sequence as DsSequence

from .annotation_rsfiqa import ImageAnnotations, RegionAnnotator, label_map_hash
from .image_io import ImageLoadError, image_content_hash, load_image_rgb

logger = logging.getLogger(__name__)

__all__ = [
    "ANNOTATION_FEATURES",
    "AnnotationKey",
    "AnnotationStore",
    "make_key",
    "partition_fingerprint",
    "cached_annotate",
    "annotate_items",
    "list_image_items",
    "AnnotationProfile",
    "AnnotationLookup",
    "MissingAnnotationError",
    "select_profile",
    "provenance_mismatches",
]

ANNOTATION_FEATURES = Features(
    {
        "key": Value("string"),
        "image_hash": Value("string"),
        "partition": Value("string"),
        "model": Value("string"),
        "prompt": Value("string"),
        "source": Value("string"),
        "num_regions": Value("int32"),
        "dimensions": DsSequence(Value("string")),
        "level_words": DsSequence(Value("string")),
        "embed_dim": Value("int32"),
        "text_embeds": Value("binary"),  # float32 (R, D), little endian
        "distortion_levels": Value("binary"),  # float32 (R, n_dims)
        "level_probs": Value("binary"),  # float32 (R, n_dims, 5)
        "descriptions": DsSequence(Value("string")),
        "raw_texts": DsSequence(Value("string")),
        "parse_ok": DsSequence(Value("bool")),
        "parsed_levels": Value("string"),  # json
        "parse_errors": Value("string"),  # json
        "label_map": Value("binary"),  # zlib(int32 (H, W)), empty if unknown
        "label_map_shape": DsSequence(Value("int32")),
        "meta": Value("string"),  # json
        "created": Value("float64"),
    }
)
_SCHEMA = ANNOTATION_FEATURES.arrow_schema


@dataclass(frozen=True)
class AnnotationKey:
    """What identifies an image's annotations."""

    image_hash: str
    partition: str
    model: str
    prompt: str

    def digest(self) -> str:
        payload = json.dumps([self.image_hash, self.partition, self.model, self.prompt])
        return hashlib.sha256(payload.encode()).hexdigest()


def partition_fingerprint(
    settings: dict[str, Any] | str | None = None, label_map: np.ndarray | None = None
) -> str:
    """``settings:<hash>`` of the partition settings, or ``labels:<hash>`` of an explicit label map."""
    if settings is not None:
        text = settings if isinstance(settings, str) else json.dumps(settings, sort_keys=True, default=str)
        return "settings:" + hashlib.sha256(text.encode()).hexdigest()[:16]
    if label_map is None:
        raise ValueError("need partition settings or the label map")
    return "labels:" + label_map_hash(label_map)[:16]


def make_key(
    image_hash: str,
    annotator: RegionAnnotator,
    partition_settings: dict[str, Any] | str | None = None,
    label_map: np.ndarray | None = None,
) -> AnnotationKey:
    return AnnotationKey(
        image_hash=image_hash,
        partition=partition_fingerprint(partition_settings, label_map),
        model=annotator.model_fingerprint,
        prompt=annotator.config.fingerprint(),
    )


def _to_bytes(arr: np.ndarray) -> bytes:
    return np.ascontiguousarray(arr, dtype="<f4").tobytes()


def _encode_row(key: AnnotationKey, ann: ImageAnnotations, source: str = "") -> dict[str, Any]:
    r, n_dims = ann.num_regions, len(ann.dimensions)
    lm = ann.label_map
    return {
        "key": key.digest(),
        "image_hash": key.image_hash,
        "partition": key.partition,
        "model": key.model,
        "prompt": key.prompt,
        "source": source,
        "num_regions": r,
        "dimensions": list(ann.dimensions),
        "level_words": list(ann.level_words),
        "embed_dim": int(ann.text_embeds.shape[1]),
        "text_embeds": _to_bytes(ann.text_embeds),
        "distortion_levels": _to_bytes(ann.distortion_levels.reshape(r, n_dims)),
        "level_probs": _to_bytes(ann.level_probs),
        "descriptions": list(ann.descriptions),
        "raw_texts": list(ann.raw_texts),
        "parse_ok": list(ann.parse_ok),
        "parsed_levels": json.dumps(ann.parsed_levels),
        "parse_errors": json.dumps(ann.parse_errors),
        "label_map": b"" if lm is None else zlib.compress(np.ascontiguousarray(lm, dtype="<i4").tobytes(), 6),
        "label_map_shape": [] if lm is None else list(lm.shape),
        "meta": json.dumps(ann.meta, default=str),
        "created": time.time(),
    }


def _decode_row(row: dict[str, Any]) -> ImageAnnotations:
    r, n_dims, d = int(row["num_regions"]), len(row["dimensions"]), int(row["embed_dim"])
    label_map = None
    if row["label_map"]:
        label_map = (
            np.frombuffer(zlib.decompress(row["label_map"]), dtype="<i4")
            .reshape(row["label_map_shape"])
            .copy()
        )
    return ImageAnnotations(
        text_embeds=np.frombuffer(row["text_embeds"], dtype="<f4").reshape(r, d).copy(),
        distortion_levels=np.frombuffer(row["distortion_levels"], dtype="<f4").reshape(r, n_dims).copy(),
        level_probs=np.frombuffer(row["level_probs"], dtype="<f4").reshape(r, n_dims, 5).copy(),
        descriptions=list(row["descriptions"]),
        raw_texts=list(row["raw_texts"]),
        parse_ok=list(row["parse_ok"]),
        parsed_levels=json.loads(row["parsed_levels"]),
        parse_errors=json.loads(row["parse_errors"]),
        dimensions=list(row["dimensions"]),
        level_words=list(row["level_words"]),
        label_map=label_map,
        meta=json.loads(row["meta"]),
    )


def _atomic_write_table(table: pa.Table, path: str) -> None:
    folder = os.path.dirname(path)
    tmp = os.path.join(folder, f".tmp-{uuid.uuid4().hex}.parquet")
    try:
        with open(tmp, "wb") as f:
            pq.write_table(table, f, compression="zstd")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    try:  # make the rename itself durable
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


class AnnotationStore:
    """Append-only Parquet store of :class:`ImageAnnotations`, keyed by :class:`AnnotationKey`.

    Args:
        root: the store folder (created if missing).
        flush_every: rows buffered before a shard is written (1 = every finished image is durable at once).
        writer_id: tag in shard names (e.g. the process rank) - only cosmetic, names are unique anyway.
    """

    def __init__(self, root: str, flush_every: int = 1, writer_id: str | int = "w"):
        self.root = os.fspath(root)
        os.makedirs(self.root, exist_ok=True)
        self._init(flush_every, writer_id)

    @classmethod
    def open(cls, root: str | os.PathLike) -> AnnotationStore:
        """An EXISTING store for reading (never creates a folder): ``FileNotFoundError`` if ``root`` is
        missing, ``ValueError`` if it holds no annotation shards."""
        root = os.fspath(root)
        if not os.path.isdir(root):
            raise FileNotFoundError(
                f"annotation store {root!r} does not exist (make one with `rsfiqa annotate --out {root} ...`)"
            )
        store = cls.__new__(cls)
        store.root = root
        store._init(1, "r")
        if not store.shard_paths():
            raise ValueError(
                f"{root!r} is not an annotation store: it holds no *.parquet shards "
                f"(made by `rsfiqa annotate --out {root} ...`)"
            )
        return store

    def _init(self, flush_every: int, writer_id: str | int) -> None:
        self.flush_every = max(1, int(flush_every))
        self.writer_id = str(writer_id)
        self._index: dict[str, tuple[str, int]] = {}
        self._pending: dict[str, dict[str, Any]] = {}
        self._tables: dict[str, pa.Table] = {}
        self.refresh()

    # -- reading --------------------------------------------------------------------------------------------
    def shard_paths(self) -> list[str]:
        names = sorted(n for n in os.listdir(self.root) if n.endswith(".parquet") and not n.startswith("."))
        return [os.path.join(self.root, n) for n in names]

    def refresh(self) -> None:
        """Re-read the shard list (other processes may have written)."""
        index: dict[str, tuple[str, int]] = {}
        for path in self.shard_paths():
            try:
                keys = pq.read_table(path, columns=["key"]).column("key").to_pylist()
            except Exception as err:  # never expected (atomic writes); do not let one file block the store
                logger.warning("skipping unreadable shard %s: %s", path, err)
                continue
            for i, k in enumerate(keys):
                index.setdefault(k, (path, i))
        self._index = index
        self._tables = {p: t for p, t in self._tables.items() if os.path.exists(p)}

    @staticmethod
    def _key_str(key: AnnotationKey | str) -> str:
        return key.digest() if isinstance(key, AnnotationKey) else str(key)

    def __contains__(self, key: AnnotationKey | str) -> bool:
        k = self._key_str(key)
        return k in self._pending or k in self._index

    def __len__(self) -> int:
        return len(set(self._index) | set(self._pending))

    def keys(self) -> list[str]:
        return sorted(set(self._index) | set(self._pending))

    def get_row(self, key: AnnotationKey | str) -> dict[str, Any] | None:
        k = self._key_str(key)
        if k in self._pending:
            return self._pending[k]
        loc = self._index.get(k)
        if loc is None:
            return None
        path, i = loc
        table = self._tables.get(path)
        if table is None:  # memory-mapped: processes reading one store (DDP ranks) share the page cache
            table = pq.read_table(path, memory_map=True)
            if len(self._tables) > 8:
                self._tables.pop(next(iter(self._tables)))
            self._tables[path] = table
        return table.slice(i, 1).to_pylist()[0]

    def get(self, key: AnnotationKey | str) -> ImageAnnotations | None:
        """The stored annotations, or ``None``."""
        row = self.get_row(key)
        return None if row is None else _decode_row(row)

    def index_rows(self) -> list[dict[str, Any]]:
        """The small columns of every entry (no arrays): key, image_hash, partition, model, prompt, embed_dim,
        num_regions, dimensions, level_words, source."""
        columns = ["key", "image_hash", "partition", "model", "prompt", "embed_dim", "num_regions"]
        columns += ["dimensions", "level_words", "source"]
        rows, seen = [], set()
        for row in self._pending.values():
            rows.append({c: row[c] for c in columns})
            seen.add(row["key"])
        for path in self.shard_paths():
            try:
                table = pq.read_table(path, columns=columns)
            except Exception as err:  # same policy as refresh()
                logger.warning("skipping unreadable shard %s: %s", path, err)
                continue
            for row in table.to_pylist():
                if row["key"] not in seen:
                    seen.add(row["key"])
                    rows.append(row)
        return rows

    def profiles(self) -> list[AnnotationProfile]:
        """One :class:`AnnotationProfile` per (annotator model, prompt, partition) found in the store."""
        groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        for row in self.index_rows():
            groups.setdefault((row["model"], row["prompt"], row["partition"]), []).append(row)
        out = []
        for (model, prompt, partition), rows in sorted(groups.items()):
            first = self.get_row(rows[0]["key"]) or {}
            meta = json.loads(first.get("meta") or "{}")
            out.append(
                AnnotationProfile(
                    model=model,
                    prompt=prompt,
                    partition=partition,
                    count=len(rows),
                    embed_dims=tuple(sorted({int(r["embed_dim"]) for r in rows})),
                    dimensions=tuple(rows[0]["dimensions"]),
                    level_words=tuple(rows[0]["level_words"]),
                    max_regions=max(int(r["num_regions"]) for r in rows),
                    partition_settings=meta.get("partition_settings"),
                )
            )
        return out

    # -- writing --------------------------------------------------------------------------------------------
    def put(self, key: AnnotationKey, ann: ImageAnnotations, source: str = "") -> None:
        """Add an entry (written to disk at the next flush; by default immediately)."""
        if not isinstance(key, AnnotationKey):
            raise TypeError("put needs an AnnotationKey (its parts are stored next to the annotations)")
        self._pending[key.digest()] = _encode_row(key, ann, source)
        if len(self._pending) >= self.flush_every:
            self.flush()

    def flush(self) -> str | None:
        """Write the buffered rows as a new shard (atomically). Returns its path."""
        if not self._pending:
            return None
        rows = list(self._pending.values())
        name = f"part-{self.writer_id}-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"
        path = os.path.join(self.root, name)
        _atomic_write_table(pa.Table.from_pylist(rows, schema=_SCHEMA), path)
        for i, row in enumerate(rows):
            self._index.setdefault(row["key"], (path, i))
        self._pending.clear()
        return path

    def compact(self) -> int:
        """Merge all shards into one (atomically), drop duplicate keys and stale temporary files.

        Call it when no other process is writing (e.g. on the main process after ``wait_for_everyone``).
        Returns the number of entries.
        """
        self.flush()
        self.refresh()
        paths = self.shard_paths()
        for name in os.listdir(self.root):
            if name.startswith(".tmp-"):
                os.remove(os.path.join(self.root, name))
        if len(paths) <= 1:
            return len(self._index)
        tables, seen = [], set()
        for path in paths:
            try:
                table = pq.read_table(path)
            except Exception as err:
                logger.warning("skipping unreadable shard %s: %s", path, err)
                continue
            keys = table.column("key").to_pylist()
            keep = [i for i, k in enumerate(keys) if not (k in seen or seen.add(k))]
            if keep:
                tables.append(table.take(pa.array(keep, type=pa.int64())))
        merged = pa.concat_tables(tables).sort_by("key")
        out = os.path.join(self.root, f"compact-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet")
        _atomic_write_table(merged, out)
        for path in paths:
            if path != out and os.path.exists(path):
                os.remove(path)
        self._tables.clear()
        self.refresh()
        return len(self._index)

    def to_dataset(self) -> Any:
        """All entries as a ``datasets.Dataset`` (one row per image, :data:`ANNOTATION_FEATURES`)."""
        from datasets import Dataset

        self.flush()
        tables = [pq.read_table(p) for p in self.shard_paths()]
        if not tables:
            return Dataset.from_list([], features=ANNOTATION_FEATURES)
        table = pa.concat_tables(tables)
        keys = table.column("key").to_pylist()
        seen: set[str] = set()
        keep = [i for i, k in enumerate(keys) if not (k in seen or seen.add(k))]
        return Dataset(table.take(pa.array(keep, type=pa.int64())).sort_by("key"))

    def __enter__(self) -> AnnotationStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.flush()


# ----------------------------------------------------------------------------------------------------------
# the processor's entry point
# ----------------------------------------------------------------------------------------------------------
def cached_annotate(
    image: Any,
    annotator: RegionAnnotator,
    store: AnnotationStore | None,
    label_map: np.ndarray | None = None,
    partition_fn: Callable[[Any], np.ndarray] | None = None,
    partition_settings: dict[str, Any] | str | None = None,
    source: str = "",
    method: str = "fast",
) -> ImageAnnotations:
    """Annotations of ``image``: from ``store`` if present, else computed, stored and returned.

    Give either ``label_map`` (keyed by its hash), or ``partition_fn`` + ``partition_settings`` (keyed by the
    settings: the partition is only computed on a miss, and it is returned in ``ann.label_map``).
    """
    pil = load_image_rgb(image)
    if label_map is None and (partition_fn is None or partition_settings is None):
        raise ValueError("give a label_map, or a partition_fn with its partition_settings")
    key = make_key(image_content_hash(pil), annotator, partition_settings, label_map)
    if store is not None:
        hit = store.get(key)
        if hit is not None:
            return hit
    if label_map is None:
        label_map = partition_fn(pil)
    ann = annotator.annotate(pil, label_map, method=method)
    if partition_settings is not None:  # provenance: what training and scoring check the store against
        ann.meta["partition_settings"] = _plain(partition_settings)
    if store is not None:
        store.put(key, ann, source=source)
    return ann


# ----------------------------------------------------------------------------------------------------------
# dataset jobs (used by `rsfiqa annotate` and processing/annotate.py)
# ----------------------------------------------------------------------------------------------------------
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")


def list_image_items(data: str) -> list[tuple[str, Callable[[], Any]]]:
    """``(item id, loader)`` pairs of an image folder (recursive, sorted) or a ``save_to_disk`` dataset
    (column ``image``). The loader returns something :func:`load_image_rgb` accepts."""
    data = os.fspath(data)
    if os.path.isfile(os.path.join(data, "dataset_info.json")) or os.path.isfile(
        os.path.join(data, "state.json")
    ):
        from datasets import load_from_disk

        ds = load_from_disk(data)
        if hasattr(ds, "keys") and not hasattr(ds, "column_names"):  # DatasetDict: all splits
            items = []
            for split in sorted(ds.keys()):
                items += [
                    (f"{split}/{i}", partial(_dataset_image, ds[split], i)) for i in range(len(ds[split]))
                ]
            return items
        return [(str(i), partial(_dataset_image, ds, i)) for i in range(len(ds))]
    files = []
    for folder, _, names in os.walk(data):
        for name in names:
            if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."):
                files.append(os.path.relpath(os.path.join(folder, name), data))
    return [(rel, partial(os.path.join, data, rel)) for rel in sorted(files)]


def _dataset_image(ds: Any, index: int) -> Any:
    return ds[index]["image"]


def annotate_items(
    items: Sequence[tuple[str, Callable[[], Any]]],
    annotator: RegionAnnotator,
    store: AnnotationStore,
    partition_fn: Callable[[Any], np.ndarray],
    partition_settings: dict[str, Any] | str,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    on_item: Callable[[str, str], None] | None = None,
    method: str = "fast",
) -> dict[str, Any]:
    """Annotate this process's share (``items[rank::world_size]``) into ``store``; skip what is stored.

    Resumable: every finished image is flushed at once (``store.flush_every``), so after a crash a rerun
    only computes what is missing. Unreadable images are reported in ``stats["errors"]``, not fatal.
    """
    from tqdm.auto import tqdm

    mine = list(items)[rank::world_size]
    stats: dict[str, Any] = {"total": len(mine), "computed": 0, "cached": 0, "errors": []}
    bar = tqdm(
        mine, desc=f"annotate[{rank}/{world_size}]", disable=not progress, position=rank, dynamic_ncols=True
    )
    for item_id, loader in bar:
        try:
            pil = load_image_rgb(loader())
        except ImageLoadError as err:
            stats["errors"].append({"item": item_id, "error": str(err)})
            logger.warning("skipping %s: %s", item_id, err)
            continue
        key = make_key(image_content_hash(pil), annotator, partition_settings)
        if key in store:
            stats["cached"] += 1
            status = "cached"
        else:
            ann = annotator.annotate(pil, partition_fn(pil), method=method)
            ann.meta["partition_settings"] = _plain(partition_settings)
            store.put(key, ann, source=item_id)
            stats["computed"] += 1
            status = "computed"
        if on_item is not None:
            on_item(item_id, status)
        bar.set_postfix(computed=stats["computed"], cached=stats["cached"])
    store.flush()
    return stats


def iter_rows(store: AnnotationStore) -> Iterable[dict[str, Any]]:
    """Every stored row (decoded-free), sorted by key."""
    for key in store.keys():
        yield store.get_row(key)


# ----------------------------------------------------------------------------------------------------------
# reading a store back: profiles, provenance checks, lookup by image content (training and the pipeline)
# ----------------------------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """JSON-safe copy (tuples -> lists, numpy scalars -> python)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


@dataclass(frozen=True)
class AnnotationProfile:
    """Who annotated a group of images of a store, and how: the (annotator model, prompt, partition) triple of
    the cache key, with what the scoring model needs to know about the arrays."""

    model: str
    prompt: str
    partition: str
    count: int = 0
    embed_dims: tuple[int, ...] = ()
    dimensions: tuple[str, ...] = ()
    level_words: tuple[str, ...] = ()
    max_regions: int = 0
    partition_settings: dict[str, Any] | None = field(default=None, compare=False, hash=False)

    @property
    def prompt_version(self) -> str:
        return self.prompt.split(":", 1)[0]

    @property
    def embed_dim(self) -> int:
        if len(self.embed_dims) != 1:
            raise ValueError(f"annotations of {self.describe()} mix text-embedding sizes {self.embed_dims}")
        return self.embed_dims[0]

    def provenance(self) -> dict[str, Any]:
        """What a trained model records (``RSFIQAConfig.annotation_model / _prompt / _partition``)."""
        return {
            "annotation_model": self.model,
            "annotation_prompt": self.prompt,
            "annotation_partition": {"key": self.partition, "settings": self.partition_settings},
        }

    def describe(self) -> str:
        settings = self.partition_settings or {}
        method = settings.get("partition_method") or settings.get("method") or "?"
        sam = f", SAM {settings['sam_model']}" if settings.get("sam_model") else ""
        return (
            f"annotator {self.model!r}, prompt {self.prompt!r}, partition {self.partition!r} ({method}{sam}), "
            f"{self.count} image(s)"
        )


class MissingAnnotationError(LookupError):
    """An image has no entry in the annotation store (for the selected annotator profile)."""

    def __init__(self, source: str, store: str, profile: AnnotationProfile | None = None):
        self.source, self.store = source, store
        who = f" by {profile.describe()}" if profile is not None else ""
        super().__init__(
            f"image {source!r} is not in the annotation store {store!r}{who}; annotate it first "
            f"(`rsfiqa annotate ... --out {store}`), or pass allow_missing_annotations=True to score it "
            "without annotations"
        )


def select_profile(
    profiles: Sequence[AnnotationProfile],
    model: str | None = None,
    prompt: str | None = None,
    partition: str | None = None,
    select: str | None = None,
    store_name: str = "the store",
) -> tuple[AnnotationProfile, list[str]]:
    """Choose the profile of a store to use: ``(profile, mismatches)``.

    ``select`` (a substring of the model, prompt or partition fingerprint) narrows the choice first. A profile
    equal to the wanted ``model`` / ``prompt`` / ``partition`` (those given) wins; otherwise, if the store
    holds a single profile, it is used and each differing part is listed in ``mismatches``. Several candidates,
    or none, raise ``ValueError`` listing what the store holds.
    """
    listing = "\n".join(f"  - {p.describe()}" for p in profiles) or "  (nothing)"
    if select:
        profiles = [p for p in profiles if select in p.model or select in p.prompt or select in p.partition]
        if not profiles:
            raise ValueError(f"no annotations in {store_name} match {select!r}; it holds:\n{listing}")
    if not profiles:
        raise ValueError(f"{store_name} holds no annotations")
    wanted = {"model": model, "prompt": prompt, "partition": partition}
    exact = [p for p in profiles if all(v is None or getattr(p, k) == v for k, v in wanted.items())]
    if len(exact) == 1:
        return exact[0], []
    if len(exact) > 1 or len(profiles) > 1:
        raise ValueError(
            f"{store_name} holds annotations of several annotators / prompts / partitions"
            + (" and none matches the model's" if not exact else "")
            + f"; choose one (e.g. --annotation_profile SUBSTRING of its annotator fingerprint):\n{listing}"
        )
    only = profiles[0]
    names = {"model": "annotator model", "prompt": "prompt", "partition": "partition"}
    mismatches = [
        f"{names[k]}: the store has {getattr(only, k)!r}, the model was trained with {v!r}"
        for k, v in wanted.items()
        if v is not None and getattr(only, k) != v
    ]
    return only, mismatches


def provenance_mismatches(profile: AnnotationProfile, config: Any) -> tuple[list[str], list[str]]:
    """``(errors, warnings)`` comparing a store profile with an ``RSFIQAConfig``.

    Errors make the annotations unusable by the model (text-embedding size, the distortion dimensions or the
    level words differ). Warnings name what differs from what the model was trained with (annotator model,
    prompt, partition): the numbers are usable but come from another source, so scores may shift.
    """
    errors, warnings = [], []
    if getattr(config, "use_region_descriptions", False) and profile.embed_dims:
        if tuple(profile.embed_dims) != (int(config.description_embed_dim),):
            errors.append(
                f"text embeddings of size {list(profile.embed_dims)} in the store, the model expects "
                f"description_embed_dim={config.description_embed_dim}"
            )
    if profile.dimensions and list(profile.dimensions) != list(config.distortion_dimensions):
        errors.append(
            f"distortion dimensions {list(profile.dimensions)} in the store, the model expects "
            f"{list(config.distortion_dimensions)}"
        )
    if profile.level_words and list(profile.level_words) != list(config.level_words):
        errors.append(
            f"level words {list(profile.level_words)} in the store, the model expects {config.level_words}"
        )
    recorded_model = getattr(config, "annotation_model", None)
    recorded_prompt = getattr(config, "annotation_prompt", None)
    recorded_partition = (getattr(config, "annotation_partition", None) or {}).get("key")
    if recorded_model and recorded_model != profile.model:
        warnings.append(
            f"annotator model {profile.model!r} in the store, the model was trained with {recorded_model!r}"
        )
    if recorded_prompt and recorded_prompt != profile.prompt:
        warnings.append(
            f"prompt {profile.prompt!r} in the store, the model was trained with {recorded_prompt!r}"
        )
    elif not recorded_prompt and profile.prompt_version != getattr(
        config, "prompt_version", profile.prompt_version
    ):
        warnings.append(
            f"prompt version {profile.prompt_version!r} in the store, the model expects {config.prompt_version!r}"
        )
    if recorded_partition and recorded_partition != profile.partition:
        warnings.append(
            f"partition {profile.partition!r} ({profile.partition_settings}) in the store, the model was trained "
            f"with {recorded_partition!r} ({(config.annotation_partition or {}).get('settings')})"
        )
    return errors, warnings


class AnnotationLookup:
    """Stored annotations by image CONTENT for one :class:`AnnotationProfile` of a store.

    Args:
        store: an :class:`AnnotationStore` or the path of an existing one (see :meth:`AnnotationStore.open`).
        profile: the profile to read; default: chosen by :func:`select_profile` from ``model`` / ``prompt`` /
            ``partition`` / ``select`` (``mismatches`` then lists what differs from the wanted ones).
        max_cached: decoded entries kept in memory, oldest dropped first (decoding is cheap; the store's
            shards themselves are memory-mapped).
    """

    def __init__(
        self,
        store: AnnotationStore | str | os.PathLike,
        profile: AnnotationProfile | None = None,
        model: str | None = None,
        prompt: str | None = None,
        partition: str | None = None,
        select: str | None = None,
        max_cached: int = 256,
    ):
        self.store = store if isinstance(store, AnnotationStore) else AnnotationStore.open(store)
        self.mismatches: list[str] = []
        if profile is None:
            profile, self.mismatches = select_profile(
                self.store.profiles(),
                model,
                prompt,
                partition,
                select,
                f"annotation store {self.store.root!r}",
            )
        self.profile = profile
        self.max_cached = int(max_cached)
        self._memo: dict[str, ImageAnnotations] = {}
        self._keys: dict[str, str] = {}
        self._reindex()

    @classmethod
    def for_config(
        cls, store: AnnotationStore | str | os.PathLike, config: Any, select: str | None = None
    ) -> AnnotationLookup:
        """The profile an ``RSFIQAConfig`` was trained with (``annotation_model`` / ``_prompt`` /
        ``_partition``), or the store's only one (``mismatches`` lists the differences)."""
        return cls(
            store,
            model=getattr(config, "annotation_model", None),
            prompt=getattr(config, "annotation_prompt", None),
            partition=(getattr(config, "annotation_partition", None) or {}).get("key"),
            select=select,
        )

    def _reindex(self) -> None:
        self._paths = self.store.shard_paths()
        p = self.profile
        self._keys = {
            r["image_hash"]: r["key"]
            for r in self.store.index_rows()
            if (r["model"], r["prompt"], r["partition"]) == (p.model, p.prompt, p.partition)
        }

    def refresh(self) -> None:
        """Pick up entries written since (e.g. by an annotation job still running); a no-op while the store's
        shard files are unchanged."""
        paths = self.store.shard_paths()
        if paths != self._paths:
            self.store.refresh()
            self._reindex()

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, image_hash: str) -> bool:
        return image_hash in self._keys

    @staticmethod
    def image_hash(image: Any) -> str:
        """The content hash an image is stored under (decoded RGB pixels + size)."""
        return image_content_hash(load_image_rgb(image))

    def missing_error(self, source: str) -> MissingAnnotationError:
        return MissingAnnotationError(source, self.store.root, self.profile)

    def get(self, image_hash: str, refresh: bool = False) -> ImageAnnotations | None:
        """The annotations of the image with this content hash, or ``None``; ``refresh=True`` re-reads the
        store once on a miss."""
        hit = self._memo.get(image_hash)
        if hit is not None:
            return hit
        key = self._keys.get(image_hash)
        if key is None and refresh:
            self.refresh()
            key = self._keys.get(image_hash)
        if key is None:
            return None
        ann = self.store.get(key)
        if ann is not None and self.max_cached > 0:
            if len(self._memo) >= self.max_cached:
                self._memo.pop(next(iter(self._memo)))
            self._memo[image_hash] = ann
        return ann
