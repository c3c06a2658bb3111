"""Memory of listing a source as it grows: the streamed listing against the whole list in memory.

A generated JSONL manifest of N entries (no images are needed: listing reads names only) is listed
by the embed stage's reader in a fresh process, for each N, two ways:

* ``stream``: :func:`corral.pipeline.ingest.stream_source` (sorted runs spilled past a chunk) read
  through :class:`corral.pipeline.shards.ShardReader`, shard by shard, as ``corral embed`` does;
* ``list``: :func:`corral.pipeline.ingest.list_source`, every item in memory (what the stage did
  before), then the same reader over that list.

Each child reports its peak RSS and the seconds taken; the JSON's ``growth_mib`` is how much the peak
grew from the smallest N to the largest (flat means the streamed listing's does not grow).

    python bench/listing.py                         # 100,000 and 1,000,000 entries
    python bench/listing.py --sizes 10000,100000 --out bench/results/listing.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import emit_result, provenance  # noqa: E402


def make_manifest(path: Path, n: int) -> None:
    """``n`` rows with a uri (in a shuffled order, so sorting is real work), a label and one metadata column."""
    import numpy as np

    order = np.random.default_rng(0).permutation(n)
    with open(path, "w") as fh:
        for i in order:
            fh.write(json.dumps({"uri": f"s3://bucket/photos/{i % 997:03d}/img_{i:09d}.jpg", "label": f"c{i % 50}", "camera": f"cam{i % 7}"}) + "\n")


def child(manifest: str, how: str, shard_size: int) -> dict:
    import resource

    from corral.pipeline.ingest import list_source, stream_source
    from corral.pipeline.shards import ShardReader

    t0 = time.perf_counter()
    items = stream_source(manifest) if how == "stream" else list_source(manifest)
    reader = ShardReader(items, done={}, shard_size=shard_size, first_index=0)
    shards = n = 0
    last = ""
    for s in reader.shards():
        shards += 1
        n += len(s.items)
        assert s.items[0].uri >= last
        last = s.items[-1].uri
    return {"items": n, "shards": shards, "seconds": round(time.perf_counter() - t0, 2), "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--shard-size", type=int, default=4096)
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.shard_size)))
        return {}
    sizes = [int(s) for s in args.sizes.split(",")]
    runs: dict[str, dict[str, dict]] = {"stream": {}, "list": {}}
    with tempfile.TemporaryDirectory(prefix="corral-bench-listing-") as tmp:
        for n in sizes:
            manifest = Path(tmp) / f"m{n}.jsonl"
            make_manifest(manifest, n)
            for how in ("stream", "list"):
                out = subprocess.run([sys.executable, __file__, "--child", str(manifest), how, "--shard-size", str(args.shard_size)], capture_output=True, text=True, check=True)
                runs[how][str(n)] = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"{how} {n:,}: {runs[how][str(n)]}", file=sys.stderr)
    lo, hi = str(sizes[0]), str(sizes[-1])
    result = {
        "bench": "listing",
        **provenance(),
        "sizes": sizes,
        "runs": runs,
        "growth_mib": {how: round(runs[how][hi]["peak_rss_mib"] - runs[how][lo]["peak_rss_mib"], 1) for how in runs},
        "peak_rss_mib_at_largest": {how: runs[how][hi]["peak_rss_mib"] for how in runs},
    }
    emit_result(result, args.out)
    return result


if __name__ == "__main__":
    main()
