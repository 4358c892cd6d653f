"""Chunk per object against the sharding codec, on local disk and on a loopback S3 server.

Extracts features of N natural pictures with the store's trunk, lays them out exactly as the
features stage does (colorfeat.trunk.output.array_settings: chunking, codec, fill value), then
writes them (a) one object per chunk, as the store does, and (b) with the sharding codec, SHARD
chunks an object, to a local folder and to a moto S3 server started in a child process. Writes go
as the stage's tasks write: whole chunks a batch (a) or one whole shard (b) at a time. Reads: the
whole array at once, and one epoch of the trainer's shuffled batches (colortrain.data). Every
round writes and reads both layouts on both targets; the medians of the rounds are printed, each
speed also as a ratio against (a) on the same target.

    .venv/bin/python benchmarks/objectstore.py [--n 512] [--size 224] [--shard 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import zarr
from zarr.storage import FsspecStore, LocalStore

from colorfeat.config import BackboneConfig
from colorfeat.store.codecs import images_per_chunk
from colorfeat.trunk.output import array_settings
from colortrain.data import ChunkShuffleSampler, _take

sys.path.insert(0, str(Path(__file__).parent))
from compression import extract, natural_images  # noqa: E402

BUCKET = "objectstore-bench"
CREDENTIALS = {"key": "testing", "secret": "testing"}
SERVER = """
import sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print("%s:%d" % server.get_host_and_port(), flush=True)
sys.stdin.read()
server.stop()
"""


@contextmanager
def moto_server() -> Iterator[dict]:
    """A moto S3 server in a child process (not sharing this process's GIL); its options."""
    child = subprocess.Popen(
        [sys.executable, "-c", SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # its request log
        text=True,
    )
    try:
        address = child.stdout.readline().strip()
        options = {**CREDENTIALS, "endpoint_url": f"http://{address}"}
        import s3fs

        s3fs.S3FileSystem(skip_instance_cache=True, **options).mkdir(BUCKET)
        yield options
    finally:
        child.stdin.close()
        child.wait(timeout=30)


def objects(store: zarr.abc.store.Store, options: dict) -> tuple[int, int]:
    """(objects, bytes) of the chunk data in `store` (array metadata not counted)."""
    if isinstance(store, LocalStore):
        files = [p for p in Path(store.root).rglob("*") if p.is_file() and p.name != "zarr.json"]
        return len(files), sum(p.stat().st_size for p in files)
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)  # the store's own is async
    found = fs.find(store.path, detail=True)
    sizes = [int(i["size"]) for p, i in found.items() if not p.endswith("zarr.json")]
    return len(sizes), sum(sizes)


def write(store: zarr.abc.store.Store, feats: np.ndarray, chunk_n: int, shard: int | None,
          batch: int) -> zarr.Array:  # fmt: skip
    """Create the array as the stage does and write it in the stage's units of work."""
    settings = array_settings(feats.shape, chunk_n)
    if shard:
        settings["shards"] = (shard * settings["chunks"][0], *feats.shape[1:])
    arr = zarr.create_array(store, **settings)
    unit = arr.shards[0] if shard else max(1, batch // chunk_n) * arr.chunks[0]
    for start in range(0, len(feats), unit):
        arr[start : start + unit] = feats[start : start + unit]
    return arr


def read_epoch(arr: zarr.Array, batch: int, seed: int) -> int:
    """One epoch of the trainer's shuffled batches (whole chunks shuffled, then rows in them)."""
    sampler = ChunkShuffleSampler(arr.shape[0], arr.chunks[0], batch, seed=seed, drop_last=False)
    sampler.set_epoch(seed)
    return sum(len(_take(arr, rows)) for _, rows in sampler)


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def measure(store, feats: np.ndarray, chunk_n: int, shard: int | None, options: dict,
            args: argparse.Namespace, seed: int) -> dict:  # fmt: skip
    """Write `feats` to `store` in one layout, then read it back both ways."""
    n = len(feats)
    t_w, _ = timed(lambda: write(store, feats, chunk_n, shard, args.batch_size))
    count, size = objects(store, options)
    t_r, back = timed(lambda: zarr.open_array(store, mode="r")[:])
    assert np.array_equal(back.view(np.uint16), feats.view(np.uint16))
    arr = zarr.open_array(store, mode="r")
    t_b, seen = timed(lambda: read_epoch(arr, args.trainer_batch, seed))
    assert seen == n
    return {"objects": count, "bytes": size, "write": n / t_w, "read": n / t_r, "batches": n / t_b}


def one_round(feats, chunk_n, layouts, targets, options, args, r: int) -> dict:
    """Write and read every (target, layout) once -> {(target, layout): measurements}."""
    out = {}
    order = list(layouts.items())
    for target, new_store in targets.items():
        for name, shard in order[:: 1 if r % 2 == 0 else -1]:  # neither always goes first
            store = new_store(f"{name}-{r}")
            out[target, name] = measure(store, feats, chunk_n, shard, options, args, r)
    return out


def report(rounds: list[dict], layouts: dict, targets: dict) -> None:
    cols = ("write", "read", "batches")
    print(f"| target | layout | objects | MB | {' | '.join(f'{c} pictures/s' for c in cols)} |")
    print("|---|---|---:|---:|" + "---:|" * len(cols))
    for target in targets:
        base = {c: statistics.median(r[target, "chunk"][c] for r in rounds) for c in cols}
        for name in layouts:
            first = rounds[0][target, name]
            cells = []
            for c in cols:
                v = statistics.median(r[target, name][c] for r in rounds)
                cells.append(f"{v:.0f} ({v / base[c]:.2f}x)")
            print(f"| {target} | {name} | {first['objects']} | {first['bytes'] / 1e6:.1f} | "
                  f"{' | '.join(cells)} |")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--layer", default="layer2")
    p.add_argument("--weights", default="none")
    p.add_argument("--shard", type=int, default=8, help="chunks a shard in layout (b)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64, help="the stage's extraction batch")
    p.add_argument("--trainer-batch", type=int, default=24, help="the trainer's batch (paper)")
    args = p.parse_args()
    cfg = BackboneConfig(args.backbone, args.layer, args.weights, args.size)
    t, feats = timed(lambda: extract(cfg, natural_images(args.n, args.size), bf16=False))
    chunk_n = images_per_chunk(feats[0].nbytes, None)
    print(
        f"# {cfg.name} at {args.size} px, weights {args.weights}: {feats.shape} float16 "
        f"({feats.nbytes / 1e6:.0f} MB, extracted in {t:.0f} s), {chunk_n} pictures a chunk, "
        f"{args.shard} chunks a shard; median of {args.rounds} rounds; cpus {os.cpu_count()}"
    )
    layouts = {"chunk": None, f"shard-{args.shard}": args.shard}
    with tempfile.TemporaryDirectory() as tmp, moto_server() as options:
        targets = {
            "local": lambda name: LocalStore(Path(tmp, name)),
            "s3": lambda name: FsspecStore.from_url(
                f"s3://{BUCKET}/{name}", storage_options=options
            ),
        }
        for new_store in targets.values():  # connections and imports warm
            write(new_store("warm-up"), feats[:8], chunk_n, None, args.batch_size)
        rounds = [
            one_round(feats, chunk_n, layouts, targets, options, args, r)
            for r in range(args.rounds)
        ]
    report(rounds, layouts, targets)


if __name__ == "__main__":
    main()
