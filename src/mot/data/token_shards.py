"""Token data at scale: row-aligned token arrays as webdataset shards, and the seeded streams that read them.

A tokenized split (image codes + captions), its text-only rows or its speech units are arrays whose first axis
is the sample. `write_row_shards` writes them as webdataset tar shards of `shard_rows` samples (one `.npy` per
field) with a manifest; `ShardRows` reads rows back one shard at a time (a small LRU of decoded shards), so
a process holds a few shards, never the split.

`StreamPlan` says which sample fills row j of step s's global batch, the same for every world size:
  - the batch's rows are cut into `streams` equal blocks; block k is stream k, and stream k reads one source
    (one sequence kind of the mixture: image_text, text_only, a speech kind), the streams shared among the
    kinds in proportion to the mixture weights;
  - the streams of one source split its shards between them (a seeded assignment), and each stream walks its
    shards in a fresh seeded order every epoch, the rows of each shard in a seeded order too;
  - so rank r of W (W dividing `streams`) reads only its streams' shards, the position of every stream at
    step s is known in closed form (resuming at a step reads nothing twice), and a 1-process run and a
    W-process run train on the same global batches.
The in-memory arrays, cut into the same virtual shards, give the same rows (tests/data/test_token_shards.py).
"""

from __future__ import annotations

import io
import json
import tarfile
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

MANIFEST = "manifest.json"


def shard_dir(tokens_dir: Path, source: str) -> Path:
    return Path(tokens_dir) / "shards" / source


def shard_sizes(n_rows: int, shard_rows: int) -> list[int]:
    return [min(shard_rows, n_rows - start) for start in range(0, n_rows, shard_rows)]


def write_row_shards(arrays: dict[str, np.ndarray], directory: Path, shard_rows: int) -> dict:
    """Write row-aligned arrays as webdataset shards `shard-%05d.tar` (sample key = row index, one `{field}.npy`
    per array) and `manifest.json` (fields, rows per shard); returns the manifest."""
    import webdataset as wds

    n_rows = {len(a) for a in arrays.values()}
    if len(n_rows) != 1:
        raise ValueError(f"write_row_shards: arrays of different lengths {sorted(n_rows)} in {directory}")
    (n,) = n_rows
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sizes = shard_sizes(n, shard_rows)
    names = []
    for shard, start in enumerate(range(0, n, shard_rows)):
        name = f"shard-{shard:05d}.tar"
        tmp = directory / (name + ".tmp")
        with wds.TarWriter(str(tmp)) as sink:
            for row in range(start, start + sizes[shard]):
                sink.write({"__key__": f"{row:010d}", **{f"{field}.npy": np.asarray(a[row])
                                                         for field, a in arrays.items()}})
        tmp.replace(directory / name)
        names.append(name)
    manifest = {"fields": sorted(arrays), "rows": n, "shard_rows": shard_rows, "shards": names, "sizes": sizes}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def read_shard(path: Path, fields: list[str]) -> dict[str, list[np.ndarray]]:
    """Every sample of one webdataset shard, field by field, in the shard's order."""
    rows: dict[str, list[np.ndarray]] = {f: [] for f in fields}
    with tarfile.open(path) as tar:
        for member in tar:
            key, _, ext = member.name.partition(".")
            field = ext.removesuffix(".npy")
            if field in rows:
                rows[field].append(np.load(io.BytesIO(tar.extractfile(member).read()), allow_pickle=False))
    return rows


class ShardRows:
    """Random access to the rows of a sharded array set, reading and decoding one whole shard at a time and
    keeping the `cache_shards` most recently used (a stream reads its shard's rows before moving on)."""

    def __init__(self, directory: Path, cache_shards: int = 4):
        self.directory = Path(directory)
        manifest_path = self.directory / MANIFEST
        if not manifest_path.exists():
            raise FileNotFoundError(f"{manifest_path}: no token shards here (written by `mot shard-tokens`)")
        self.manifest = json.loads(manifest_path.read_text())
        self.starts = np.cumsum([0] + self.manifest["sizes"])
        self.cache: OrderedDict[int, dict[str, list[np.ndarray]]] = OrderedDict()
        self.cache_shards = cache_shards
        self.shards_read = 0

    def __len__(self) -> int:
        return self.manifest["rows"]

    def shard(self, index: int) -> dict[str, list[np.ndarray]]:
        if index in self.cache:
            self.cache.move_to_end(index)
            return self.cache[index]
        rows = read_shard(self.directory / self.manifest["shards"][index], self.manifest["fields"])
        self.shards_read += 1
        self.cache[index] = rows
        if len(self.cache) > self.cache_shards:
            self.cache.popitem(last=False)
        return rows

    def row(self, field: str, index: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(f"row {index} of {len(self)} in {self.directory}")
        shard = int(np.searchsorted(self.starts, index, side="right")) - 1
        return self.shard(shard)[field][index - self.starts[shard]]

    def field(self, name: str) -> "ShardField":
        return ShardField(self, name)


class ShardField:
    """One field of a ShardRows, indexed like the in-memory array: a[i] or a[i, ...]."""

    def __init__(self, rows: ShardRows, name: str):
        self.rows, self.name = rows, name

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key):
        first, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        row = self.rows.row(self.name, int(first))
        return row[rest] if rest else row


def allocate_streams(weights: dict[str, float], streams: int) -> list[str]:
    """The kind each stream reads: `streams` shared among the kinds with a weight > 0 in proportion to the
    weights (largest remainder, at least one each), in the order the kinds are given."""
    kinds = [k for k, w in weights.items() if w > 0]
    if len(kinds) > streams:
        raise ValueError(f"sequences.streams: {streams} streams cannot carry the {len(kinds)} sequence kinds "
                         f"{kinds}; expected at least {len(kinds)}")
    total = sum(weights[k] for k in kinds)
    exact = {k: streams * weights[k] / total for k in kinds}
    counts = {k: max(1, int(exact[k])) for k in kinds}
    by_remainder = sorted(kinds, key=lambda k: exact[k] - int(exact[k]), reverse=True)
    while sum(counts.values()) < streams:
        counts[by_remainder[0]] += 1
        by_remainder = by_remainder[1:] + by_remainder[:1]
    while sum(counts.values()) > streams:  # the at-least-one floor overshot: take from the largest
        counts[max(kinds, key=lambda k: counts[k] - exact[k])] -= 1
    return [k for k in kinds for _ in range(counts[k])]


@dataclass(frozen=True)
class Stream:
    """One stream: its source's shard sizes, the shards it owns, its seed."""

    sizes: tuple[int, ...]
    shards: tuple[int, ...]
    seed: tuple[int, ...]

    @property
    def epoch_rows(self) -> int:
        return sum(self.sizes[s] for s in self.shards)

    def index(self, position: int) -> int:
        """The source row at this stream's position (0, 1, ... over all epochs)."""
        epoch, offset = divmod(position, self.epoch_rows)
        order, starts = _epoch_layout(self.seed, epoch, self.shards, self.sizes)
        slot = int(np.searchsorted(starts, offset, side="right")) - 1
        shard = order[slot]
        within = _row_order(self.seed, epoch, shard, self.sizes[shard])[offset - starts[slot]]
        return int(_shard_offsets(self.sizes)[shard] + within)


@lru_cache(maxsize=256)
def _epoch_layout(seed: tuple[int, ...], epoch: int, shards: tuple[int, ...],
                  sizes: tuple[int, ...]) -> tuple[tuple[int, ...], np.ndarray]:
    """A stream's shards in this epoch's seeded order, and where each starts in the stream's epoch."""
    order = tuple(shards[i] for i in np.random.default_rng([*seed, epoch]).permutation(len(shards)))
    return order, np.cumsum([0] + [sizes[s] for s in order])


@lru_cache(maxsize=64)
def _shard_offsets(sizes: tuple[int, ...]) -> np.ndarray:
    """The first source row of each shard."""
    return np.cumsum((0,) + sizes)


@lru_cache(maxsize=1024)
def _row_order(seed: tuple[int, ...], epoch: int, shard: int, size: int) -> np.ndarray:
    return np.random.default_rng([*seed, epoch, shard]).permutation(size)


class StreamPlan:
    """Which source row fills each row of each step's global batch (see the module docstring)."""

    def __init__(self, kinds: list[str], source_of: dict[str, str], source_sizes: dict[str, list[int]],
                 batch_size: int, seed: int):
        streams = len(kinds)
        if batch_size % streams:
            raise ValueError(f"train.batch_size: {batch_size} rows cannot be cut into sequences.streams={streams} "
                             f"equal blocks; expected a multiple of {streams}")
        self.kinds, self.batch_size, self.per_stream = kinds, batch_size, batch_size // streams
        self.streams: list[Stream] = []
        for k, kind in enumerate(kinds):
            source = source_of[kind]
            sizes = tuple(source_sizes[source])
            peers = [j for j, other in enumerate(kinds) if source_of[other] == source]  # streams of this source
            if len(sizes) < len(peers):
                raise ValueError(f"sequences.streams: {len(peers)} streams read the {source} rows but they have "
                                 f"{len(sizes)} shards; expected at least one shard per stream (lower "
                                 f"sequences.shard_rows or sequences.streams)")
            owner = np.random.default_rng([seed, 7919]).permutation(len(sizes))  # shards dealt to the streams
            mine = tuple(sorted(int(s) for s in owner[peers.index(k)::len(peers)]))
            self.streams.append(Stream(sizes, mine, (seed, k)))

    def row(self, step: int, row: int) -> tuple[str, int]:
        """(kind, source row) of global batch row `row` at `step`."""
        k, i = divmod(row, self.per_stream)
        return self.kinds[k], self.streams[k].index(step * self.per_stream + i)
