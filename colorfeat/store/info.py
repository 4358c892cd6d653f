"""What `colorfeat store info` and `store ls` show: a version described (its source, its parts
and their arrays, splits, feature sets, skipped pictures by reason) and a root's versions listed."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime

from colorfeat.errors import UserError
from colorfeat.filesystems import filesystem
from colorfeat.store import schema
from colorfeat.store.layout import (
    PINS,
    TMP_PREFIX,
    VERSIONS,
    arrays,
    dtype_name,
    human,
    join_url,
    read_latest,
    require_local_dir,
)
from colorfeat.store.reader import StoreVersion, not_a_root
from colorfeat.store.validate import recorded_specs


def describe_version(v: StoreVersion) -> dict:
    """A JSON-able description: attrs, parts, splits with counts, skipped pictures by reason, and
    every array's shape/chunks/codecs/stored bytes and the part that added it."""
    owner = _owners(v)
    found = {}
    for path, arr in arrays(v.group):
        meta = arr.metadata.to_dict()
        found[path] = {
            "shape": list(arr.shape),
            "dtype": dtype_name(arr),
            "chunks": list(arr.chunks),
            "codecs": [c.get("name") for c in meta.get("codecs", [])],
            "stored_bytes": int(arr.nbytes_stored()),
            "part": owner(path),
        }
    splits = {
        s: {
            "images": v.n_images(s),
            "captions": v.n_captions(s),
            "image_size": int(v.array(s, schema.RGB).shape[1]),
        }
        for s in v.splits
    }
    features = {
        name: {k: v.features(v.splits[0], name).attrs.get(k) for k in schema.FEATURE_ATTRS}
        for name in v.feature_names()
        if v.splits
    }
    return {
        "path": v.path,
        "version": v.version,
        "schema": v.attrs.get("schema"),
        "created": v.attrs.get("created"),
        "source": v.attrs.get("source") or {},
        "vocab_size": int(v.table(schema.VOCAB_TOKENS).shape[0]),
        "embedding_dim": int(v.table(schema.VOCAB_EMBEDDINGS).shape[1]),
        "parts": sorted({a["part"] for a in found.values() if a["part"]}),
        "splits": splits,
        "features": features,
        "skipped_by_reason": skip_reasons(v.attrs.get("skipped") or []),
        "arrays": found,
        "stored_bytes": sum(a["stored_bytes"] for a in found.values()),
        "attrs": v.attrs,
    }


def _owners(v: StoreVersion):
    """path -> the name of the part that added it ("" when the version does not record it)."""
    table = []
    for part, specs in recorded_specs(v.attrs).items():
        for spec in specs:
            for split in v.splits if spec.per_split else [None]:
                table.append((spec.where(split).removesuffix("*"), part))

    def owner(path: str) -> str:
        for where, part in table:
            if path == where or (where.endswith("/") and path.startswith(where)):
                return part
        return ""

    return owner


def skip_reasons(skipped: list) -> dict[str, int]:
    """{reason: count} of a version's skipped pictures, most frequent first."""
    reasons = Counter(
        str(s.get("reason", "?")).split(":")[0] for s in skipped if isinstance(s, dict)
    )
    return dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))


def render_info(info: dict) -> str:
    """A readable text report of `describe_version`'s dict."""
    lines = [
        f"version   {info['version']}  ({info['schema']}, created {info['created']})",
        f"path      {info['path']}",
        _source_line(info.get("source") or {}),
        f"size      {human(info['stored_bytes'])} stored",
        f"vocab     {info['vocab_size']} tokens, embeddings dim {info['embedding_dim']}",
    ]
    for split, c in info["splits"].items():
        lines.append(
            f"split     {split}: {c['images']} images ({c['image_size']} px), "
            f"{c['captions']} captions"
        )
    reasons = info.get("skipped_by_reason") or {}
    total = sum(reasons.values())
    shown = ", ".join(f"{reason} {n}" for reason, n in reasons.items())
    lines.append(f"skipped   {total} pictures" + (f": {shown}" if shown else ""))
    for name, f in info["features"].items():
        lines.append(f"features  {name}: weights {f['weights']} ({str(f['weights_hash'])[:12]})")
    lines.append("")
    width = max((len(p) for p in info["arrays"]), default=5)
    lines.append(
        f"{'array':<{width}}  {'shape':<22} {'dtype':<8} {'chunks':<22} {'stored':>9}  "
        f"{'codecs':<14} stage"
    )
    for path, a in info["arrays"].items():
        shape, chunks = "x".join(map(str, a["shape"])), "x".join(map(str, a["chunks"]))
        lines.append(
            f"{path:<{width}}  {shape:<22} {a['dtype']:<8} {chunks:<22} "
            f"{human(a['stored_bytes']):>9}  {'+'.join(a['codecs']):<14} {a.get('part', '')}"
        )
    return "\n".join(lines)


def _source_line(source: dict) -> str:
    """`source    KIND SPEC (identity ID)`, and the source options given, if any."""
    kind = source.get("kind", "(kind not recorded)")
    line = f"source    {kind} {source.get('spec', '?')} (identity {source.get('identity', '?')})"
    options = source.get("options") or {}
    return line + "".join(f", --{k.replace('_', '-')} {v}" for k, v in sorted(options.items()))


def list_versions(root: str, *, storage_options: dict | None = None) -> list[dict]:
    """Every published version of a root, oldest first: id, created, size, whether LATEST."""
    fs, base = filesystem(root, storage_options)
    fs.invalidate_cache()
    require_local_dir(fs, base, root)
    if not fs.isdir(f"{base}/{VERSIONS}"):
        raise not_a_root(root)
    latest = read_latest(fs, base, root)
    pins = {p.rstrip("/").rsplit("/", 1)[-1] for p in _listing(fs, f"{base}/{PINS}")}
    out = []
    for entry in fs.ls(f"{base}/{VERSIONS}", detail=False):
        vid = entry.rstrip("/").rsplit("/", 1)[-1]
        if vid.startswith(TMP_PREFIX) or not fs.isfile(f"{base}/{VERSIONS}/{vid}/zarr.json"):
            continue
        try:
            meta = json.loads(fs.cat_file(f"{base}/{VERSIONS}/{vid}/zarr.json"))
        except ValueError:
            raise UserError(f"{root}: {VERSIONS}/{vid}/zarr.json is not JSON") from None
        attrs = meta.get("attributes", {})
        out.append(
            {
                "version": vid,
                "latest": vid == latest,
                "pinned": vid in pins,
                "created": attrs.get("created"),
                "bytes": int(fs.du(f"{base}/{VERSIONS}/{vid}")),
                "features": attrs.get(schema.ATTR_FEATURES, []),
                "path": join_url(root, f"{VERSIONS}/{vid}"),
            }
        )
    return sorted(out, key=lambda d: (_created(d["created"]), d["version"]))


def _created(text: str | None) -> datetime:
    """A version's creation time for ordering (to the microsecond; older versions to the second)."""
    try:
        return datetime.fromisoformat(text) if text else datetime.min.replace(tzinfo=UTC)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)


def render_versions(versions: list[dict]) -> str:
    """A text table of `list_versions`."""
    if not versions:
        return "no published versions"
    lines = [f"  {'version':<18} {'created':<26} {'size':>9}  features"]
    for v in versions:
        mark = "*" if v["latest"] else "p" if v.get("pinned") else " "
        lines.append(
            f"{mark} {v['version']:<18} {v['created'] or '?':<26} {human(v['bytes']):>9}  "
            f"{', '.join(v['features'])}"
        )
    lines.append("* = LATEST, p = pinned (kept by gc)")
    return "\n".join(lines)


def _listing(fs, path: str) -> list[str]:
    try:
        return fs.ls(path, detail=False)
    except (FileNotFoundError, NotADirectoryError):
        return []
