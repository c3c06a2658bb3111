"""The recognition index: labelled vectors in FAISS, with the id -> label map beside them.

The index holds one row per vector. A row is *labelled* (it votes for its label), a *negative*
(an item a curator excluded from one or more labels: it votes against them), or *inactive* (an
item that lost its label after it was indexed; skipped by searches until the next rebuild). The
row -> item id / label map lives beside the FAISS index, so renaming or merging labels never
touches the vectors.

Layout under ``workspace/index/``::

    index.json               manifest: FAISS factory string and search knobs, metric, dim,
                             embedder model + weights hash, row counts, label store version,
                             the decision rule and its calibration, and the names of the two
                             files below. Written last, so a reader starting from it sees one
                             whole generation.
    index-<gen>.faiss        the FAISS index (``faiss.write_index``)
    rows-<gen>.parquet       row (int64), id (string), label (string, null when none),
                             not_labels (list<string>: labels the item was excluded from)
    head-<gen>.npz           when built with the learnt head: its arrays (PCA, logistic
                             regression, calibrators, labelled features, novelty distances;
                             ``numpy.load(..., allow_pickle=False)``); its label names, threshold
                             and format (``corral-learnt-head/1``) are ``head`` in index.json.
                             See :mod:`corral.storage.learnt_head`.

Index types are FAISS's own factory strings (``"Flat"``, ``"HNSW32,Flat"``,
``"IVF1024,PQ192x4fs,RFlat"``), always with the inner-product metric on L2-normalised vectors, so
a score is a cosine similarity. Search knobs (``nprobe``, ``efSearch``, ``k_factor_rf``) are kept
apart from the build settings and can be changed without rebuilding.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from corral.storage.learnt_head import LearntHead
from corral.storage.workspace import WorkspaceError, atomic_write_json, atomic_write_table

logger = logging.getLogger(__name__)

MANIFEST = "index.json"
FORMAT = "corral-index/1"
#: Up to this many vectors the default index is exact ("Flat"); above it an IVF index is recommended
#: (an exact search over 50k x 1280 floats takes about 10 ms on one CPU core).
EXACT_LIMIT = 50_000
#: Rows searched beyond k to step over inactive rows (unlabelled since the last rebuild).
MAX_OVERFETCH = 64
#: Knobs that FAISS's ParameterSpace sets at search time.
SEARCH_KNOBS = ("nprobe", "efSearch", "k_factor_rf")


class RecognitionIndexError(WorkspaceError):
    """A missing, damaged or mismatched recognition index (or a bad factory string)."""


def _faiss():
    import faiss

    return faiss


def recommend_factory(n: int, dim: int, *, gpu: bool = False) -> str:
    """The FAISS factory string Corral uses for ``n`` vectors of dimension ``dim``.

    Exact search (``"Flat"``) up to :data:`EXACT_LIMIT` vectors. Above it: an inverted file with
    about ``sqrt(n)`` lists; on the CPU its codes are 4-bit fast-scan PQ re-ranked with the exact
    vectors (``RFlat``), which keeps recall@1 high at a few ms per query; on a GPU plain
    ``IVF,Flat`` (the GPU scans full vectors fast).
    """
    if n < 0 or dim < 1:
        raise ValueError(f"recommend_factory(n={n}, dim={dim}): n must be >= 0 and dim >= 1")
    if n <= EXACT_LIMIT:
        return "Flat"
    nlist = int(min(65536, max(256, 2 ** round(math.log2(math.sqrt(n))))))
    if gpu:
        return f"IVF{nlist},Flat"
    m = dim // 4
    if dim % 4 == 0 and m % 2 == 0:
        return f"IVF{nlist},PQ{m}x4fs,RFlat"
    return f"IVF{nlist},SQ8"


def create_index(factory: str, dim: int) -> Any:
    """An empty inner-product FAISS index from a factory string; a bad string is a clear error."""
    if not isinstance(factory, str) or not factory.strip():
        raise RecognitionIndexError(f"factory={factory!r}: expected a FAISS index-factory string such as 'Flat' or 'HNSW32,Flat'")
    faiss = _faiss()
    try:
        return faiss.index_factory(int(dim), factory.strip(), faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        detail = str(e).strip().splitlines()[-1][:200]
        raise RecognitionIndexError(f"factory={factory!r} is not a FAISS index-factory string FAISS accepts ({detail}); try 'Flat', 'HNSW32,Flat' or 'IVF1024,PQ64x4fs,RFlat'") from None


def train_index(index: Any, vectors: np.ndarray, *, seed: int = 0, max_per_list: int = 64) -> float:
    """Train ``index`` (when it needs training) on a sample of ``vectors``; returns seconds."""
    if index.is_trained:
        return 0.0
    t0 = time.perf_counter()
    faiss = _faiss()
    nlist = int(getattr(faiss.try_extract_index_ivf(index), "nlist", 0))
    want = max(10_000, max_per_list * int(nlist or 256))
    if len(vectors) < (nlist or 1):
        raise RecognitionIndexError(f"the index needs at least {nlist} training vectors for its {nlist} lists and has {len(vectors)}; use a smaller IVF size or 'Flat'")
    if len(vectors) > want:
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(len(vectors), size=want, replace=False))
        vectors = vectors[sample]
    index.train(np.ascontiguousarray(vectors, dtype=np.float32))
    return time.perf_counter() - t0


def set_search_params(index: Any, params: Mapping[str, float]) -> None:
    """Apply search knobs (``nprobe``, ``efSearch``, ``k_factor_rf``) the index understands."""
    faiss = _faiss()
    ps = faiss.ParameterSpace()
    for key, value in params.items():
        if key not in SEARCH_KNOBS:
            raise RecognitionIndexError(f"search parameter {key!r}: expected one of {', '.join(SEARCH_KNOBS)}")
        ps.set_index_parameter(index, key, float(value))


def _knob_candidates(index: Any) -> tuple[str | None, list[int]]:
    faiss = _faiss()
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        nlist = int(ivf.nlist)
        steps = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)
        return "nprobe", [p for p in steps if p <= nlist] or [nlist]
    if "HNSW" in type(faiss.downcast_index(index)).__name__:
        return "efSearch", [16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024]
    return None, []


def tune_search(index: Any, vectors: np.ndarray, *, target_recall: float = 0.95, queries: int = 300, similarity: float = 0.8, seed: int = 0) -> dict[str, Any]:
    """Pick the cheapest search knob giving ``target_recall`` recall@1 against exact search.

    The queries are stored vectors moved away from themselves to cosine ``similarity`` (a new
    photo of a known thing), so the exact answer is known without a second index. Exact indexes
    need no tuning. Returns the knobs plus the recall measured with them.
    """
    knob, candidates = _knob_candidates(index)
    if knob is None or len(vectors) == 0:
        return {}
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(vectors), size=min(queries, len(vectors)), replace=False)
    q = perturb(vectors[rows], similarity=similarity, rng=rng)
    # exact answers by brute force, in blocks so memory stays small
    best = np.full(len(q), -np.inf, dtype=np.float32)
    truth = np.zeros(len(q), dtype=np.int64)
    for s in range(0, len(vectors), 65536):
        sims = q @ vectors[s : s + 65536].T
        j = sims.argmax(axis=1)
        v = sims[np.arange(len(q)), j]
        better = v > best
        best[better], truth[better] = v[better], j[better] + s
    params: dict[str, Any] = {}
    if isinstance(_faiss().downcast_index(index), _faiss().IndexRefine):
        params["k_factor_rf"] = 16
    recall = 0.0
    for c in candidates:
        params[knob] = c
        set_search_params(index, params)
        _, got = index.search(q, 1)
        recall = float((got[:, 0] == truth).mean())
        if recall >= target_recall:
            break
    logger.info("search knobs %s give recall@1 %.3f on %d perturbed queries", params, recall, len(q))
    return {"params": params, "recall_at_1": round(recall, 4), "queries": int(len(q)), "query_similarity": similarity}


def perturb(vectors: np.ndarray, *, similarity: float, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors at cosine ``similarity`` (in expectation) from the given unit vectors."""
    noise = rng.standard_normal(vectors.shape).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    # remove the component along the vector, then mix at the wanted angle
    noise -= (noise * vectors).sum(axis=1, keepdims=True) * vectors
    noise /= np.maximum(np.linalg.norm(noise, axis=1, keepdims=True), 1e-12)
    s = float(np.clip(similarity, -1.0, 1.0))
    out = s * vectors + math.sqrt(max(0.0, 1.0 - s * s)) * noise
    return np.ascontiguousarray(out, dtype=np.float32)


@dataclass
class IndexMeta:
    """What ``index.json`` records (besides the file names)."""

    factory: str  # FAISS index-factory string
    dim: int
    model: str  # embedder registry name the vectors came from
    weights_hash: str | None  # the embedder's weights hash; queries from other weights are refused
    embedding_set: str = ""  # the workspace's embedding set the vectors came from
    metric: str = "inner_product"
    center: list[float] | None = None  # subtracted from every vector (then re-normalised) before indexing
    search: dict[str, Any] = field(default_factory=dict)  # search knobs (nprobe, efSearch, k_factor_rf)
    tuning: dict[str, Any] = field(default_factory=dict)  # how the knobs were chosen
    rule: dict[str, Any] = field(default_factory=dict)  # decision rule: k, tau, threshold, suggest_threshold
    calibration: dict[str, Any] = field(default_factory=dict)  # held-out precision / recall report
    labels_version: int = 0  # label store version the row map reflects
    generation: int = 0  # bumped by every save
    built_at: str = ""  # last full build (UTC)
    updated_at: str = ""  # last save (UTC)
    build_seconds: float = 0.0
    device: str = "cpu"  # where it was built
    detection: dict[str, Any] = field(default_factory=dict)  # crops index: detector and crop options (queries are detected the same way)
    head: dict[str, Any] = field(default_factory=dict)  # the learnt head's entry (file, labels, threshold); empty: the index answers alone

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "IndexMeta":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class LabelIndex:
    """A FAISS index plus, for each of its rows, the item id, its label and its exclusions."""

    def __init__(self, index: Any, meta: IndexMeta, ids: list[str], labels: list[str | None], not_labels: list[Iterable[str]] | None = None):
        if index.ntotal != len(ids) or len(ids) != len(labels):
            raise RecognitionIndexError(f"index has {index.ntotal} vectors but the row map has {len(ids)} ids and {len(labels)} labels")
        self.index = index
        self.meta = meta
        self.ids: list[str] = list(ids)
        self.label_names: list[str] = []
        self._code: dict[str, int] = {}
        self.row_label = np.full(len(ids), -1, dtype=np.int32)
        self.not_labels: dict[int, frozenset[int]] = {}
        self._row_of: dict[str, int] | None = None
        self._gpu: Any = None
        self._center = None if meta.center is None else np.asarray(meta.center, dtype=np.float32)
        self._mask: np.ndarray | None = None
        self._inactive = 0
        self.head: LearntHead | None = None  # the curation loop's model, when built with it
        self.set_rows(labels, not_labels or [()] * len(ids))

    # -- row map ----------------------------------------------------------------------------
    def code(self, name: str) -> int:
        c = self._code.get(name)
        if c is None:
            c = self._code[name] = len(self.label_names)
            self.label_names.append(name)
        return c

    def set_rows(self, labels: list[str | None], not_labels: list[Iterable[str]]) -> None:
        """Replace the label and exclusions of every row (vectors untouched)."""
        self.label_names, self._code = [], {}
        self.row_label = np.fromiter((self.code(lb) if lb else -1 for lb in labels), dtype=np.int32, count=len(labels))
        self.not_labels = {}
        for r, names in enumerate(not_labels):
            if names:
                self.not_labels[r] = frozenset(self.code(n) for n in names)
        self._mask = None

    def row_of(self, item_id: str) -> int | None:
        if self._row_of is None:
            self._row_of = {i: r for r, i in enumerate(self.ids)}
        return self._row_of.get(item_id)

    def row_state(self) -> dict[str, int]:
        labelled = int((self.row_label >= 0).sum())
        negatives = sum(1 for r in self.not_labels if self.row_label[r] < 0)
        return {"rows": len(self.ids), "labelled": labelled, "negatives": negatives, "inactive": len(self.ids) - labelled - negatives, "labels": len(set(self.row_label[self.row_label >= 0].tolist()))}

    def active_mask(self) -> np.ndarray:
        """True for rows searches may return (labelled rows and negatives); cached."""
        if self._mask is None or len(self._mask) != len(self.ids):
            mask = self.row_label >= 0
            if self.not_labels:
                mask[np.fromiter(self.not_labels, dtype=np.int64)] = True
            self._mask, self._inactive = mask, int(len(mask) - mask.sum())
        return self._mask

    # -- vectors ----------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.meta.dim)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        """Embedding-space unit vectors -> the space the index holds (centred, re-normalised)."""
        v = np.ascontiguousarray(vectors, dtype=np.float32)
        if self._center is None:
            return v
        v = v - self._center
        return np.ascontiguousarray(v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12), dtype=np.float32)

    def add(self, ids: list[str], vectors: np.ndarray, labels: list[str | None], not_labels: list[Iterable[str]] | None = None) -> int:
        """Append new rows (items not in the index yet, embedding-space vectors); returns how many."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or len(vectors) != len(ids) or len(ids) != len(labels):
            raise RecognitionIndexError(f"add: expected {len(ids)} vectors of dimension {self.dim} with as many labels, got shape {vectors.shape} and {len(labels)} labels")
        dup = [i for i in ids if self.row_of(i) is not None]
        if dup:
            raise RecognitionIndexError(f"add: {len(dup)} item(s) are already in the index (first: {dup[0]}); relabel them with set_rows instead")
        if not len(ids):
            return 0
        start = len(self.ids)
        self.index.add(self.transform(vectors))
        self._gpu = None
        self.ids.extend(ids)
        self.row_label = np.concatenate([self.row_label, np.fromiter((self.code(lb) if lb else -1 for lb in labels), dtype=np.int32, count=len(labels))])
        for r, names in enumerate(not_labels or [()] * len(ids)):
            if names:
                self.not_labels[start + r] = frozenset(self.code(n) for n in names)
        self._row_of = None
        self._mask = None
        return len(ids)

    def searcher(self) -> Any:
        """The index searches run on: a GPU copy when FAISS sees a GPU and supports this type."""
        faiss = _faiss()
        if self._gpu is None and faiss.get_num_gpus() > 0:
            try:
                self._gpu = faiss.index_cpu_to_all_gpus(self.index)
                set_search_params(self._gpu, {k: v for k, v in self.meta.search.items() if k == "nprobe"})
                logger.info("searching on %d GPU(s)", faiss.get_num_gpus())
            except RuntimeError as e:  # e.g. fast-scan PQ has no GPU version
                logger.info("index type %s stays on the CPU (%s)", self.meta.factory, str(e).splitlines()[-1][:120])
                self._gpu = False
        return self._gpu or self.index

    def search(self, queries: np.ndarray, k: int, *, transformed: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, rows) of the ``k`` nearest active rows; row -1 where there are fewer.

        ``queries`` are embedding-space unit vectors, or already in the index's space when
        ``transformed``.
        """
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise RecognitionIndexError(f"queries have shape {q.shape}; this index holds vectors of dimension {self.dim}")
        if not transformed:
            q = self.transform(q)
        n = len(q)
        if self.ntotal == 0 or n == 0:
            return np.zeros((n, k), np.float32), np.full((n, k), -1, np.int64)
        mask = self.active_mask()
        inactive = self._inactive
        fetch = min(self.ntotal, k + min(inactive, MAX_OVERFETCH))
        sims, rows = self.searcher().search(q, fetch)
        if not inactive:
            return _pad(sims, rows, k)
        out_s = np.zeros((n, k), np.float32)
        out_r = np.full((n, k), -1, np.int64)
        for i in range(n):
            keep = [j for j in range(fetch) if rows[i, j] >= 0 and mask[rows[i, j]]][:k]
            out_s[i, : len(keep)] = sims[i, keep]
            out_r[i, : len(keep)] = rows[i, keep]
        return out_s, out_r

    # -- files ------------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write a new generation into ``folder`` (manifest last) and drop older generations."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.meta.generation += 1
        self.meta.updated_at = utc_now()
        gen = f"{self.meta.generation:06d}"
        faiss_name, rows_name = f"index-{gen}.faiss", f"rows-{gen}.parquet"
        head_name = f"head-{gen}.npz" if self.head is not None else None
        if self.head is not None and self.head.dim != self.dim:
            raise RecognitionIndexError(f"the learnt head takes {self.head.dim}-d vectors and the index holds {self.dim}-d ones")
        self.meta.head = self.head.save(folder, head_name) if self.head is not None and head_name else {}
        fd, tmp = tempfile.mkstemp(prefix=f".{faiss_name}.", suffix=".tmp", dir=folder)
        os.close(fd)
        try:
            _faiss().write_index(self.index, tmp)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, folder / faiss_name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        names = self.label_names
        atomic_write_table(
            folder / rows_name,
            pa.table(
                {
                    "row": pa.array(np.arange(len(self.ids), dtype=np.int64)),
                    "id": pa.array(self.ids, type=pa.string()),
                    "label": pa.array([names[c] if c >= 0 else None for c in self.row_label.tolist()], type=pa.string()),
                    "not_labels": pa.array([sorted(names[c] for c in self.not_labels.get(r, ())) for r in range(len(self.ids))], type=pa.list_(pa.string())),
                }
            ),
        )
        files = {"faiss": faiss_name, "rows": rows_name, **({"head": head_name} if head_name else {})}
        atomic_write_json(folder / MANIFEST, {"format": FORMAT, "files": files, **self.row_state(), **asdict(self.meta)})
        for old in list(folder.glob("index-*.faiss")) + list(folder.glob("rows-*.parquet")) + list(folder.glob("head-*.npz")):
            if old.name not in files.values():
                old.unlink(missing_ok=True)
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike[str], *, mmap: bool = False) -> "LabelIndex":
        """Read the generation ``folder/index.json`` names (``folder`` may also be a workspace)."""
        folder = resolve_folder(folder)
        for attempt in range(3):  # a save may replace the generation between our reads
            manifest = read_manifest(folder)
            files = manifest.get("files") or {}
            fpath, rpath = folder / str(files.get("faiss", "")), folder / str(files.get("rows", ""))
            if fpath.is_file() and rpath.is_file() and (not files.get("head") or (folder / str(files["head"])).is_file()):
                break
            time.sleep(0.05 * (attempt + 1))
        else:
            raise RecognitionIndexError(f"index in {folder} names files that are missing ({files}); rebuild it with `corral index build`")
        faiss = _faiss()
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
        try:
            index = faiss.read_index(str(fpath), flags)
        except RuntimeError as e:
            raise RecognitionIndexError(f"{fpath} is not a readable FAISS index ({str(e).splitlines()[-1][:120]}); rebuild it with `corral index build`") from None
        rows = pq.read_table(rpath)
        meta = IndexMeta.from_dict(manifest)
        out = cls(index, meta, rows.column("id").to_pylist(), rows.column("label").to_pylist(), rows.column("not_labels").to_pylist())
        if files.get("head"):
            try:
                out.head = LearntHead.load(folder, {**meta.head, "file": files["head"]})
            except (OSError, ValueError, KeyError) as e:
                raise RecognitionIndexError(f"the learnt head in {folder} is unreadable ({e}); rebuild it with `corral index build`") from None
        if meta.search:
            set_search_params(index, meta.search)
        return out


def _pad(sims: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if sims.shape[1] >= k:
        return sims[:, :k], rows[:, :k]
    n = len(sims)
    return np.hstack([sims, np.zeros((n, k - sims.shape[1]), np.float32)]), np.hstack([rows, np.full((n, k - rows.shape[1]), -1, np.int64)])


def resolve_folder(path: str | os.PathLike[str]) -> Path:
    """The index folder for a workspace, a pulled version or the index folder itself."""
    p = Path(path).expanduser().resolve()
    if (p / MANIFEST).is_file():
        return p
    if (p / "index" / MANIFEST).is_file():
        return p / "index"
    raise RecognitionIndexError(f"no recognition index in {p}; build one with `corral index build --workspace {p}`")


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``index.json`` of an index folder (or of the workspace holding it)."""
    folder = Path(path)
    if not (folder / MANIFEST).is_file():
        folder = resolve_folder(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise RecognitionIndexError(f"{folder / MANIFEST} is not readable JSON ({e}); rebuild with `corral index build`") from None
    if manifest.get("format") != FORMAT:
        raise RecognitionIndexError(f"{folder / MANIFEST} is not a {FORMAT} manifest (format {manifest.get('format')!r})")
    return manifest
