"""Is a version complete: every array a part declared (dtype, rank, rows, attrs), each part's own
checks when it is published, every chunk present, and the manifest in agreement.

What a version holds is read from the version itself (root attr `parts`: each part's array
specs, recorded when it was published); a version from before that record holds the layout of
colorfeat/1 (`schema.ARRAYS`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import zarr

from colorfeat.constants import STORE_SCHEMA
from colorfeat.store import schema
from colorfeat.store.layout import arrays, chunk_regions, dtype_name
from colorfeat.store.parts import Check, Part
from colorfeat.store.schema import ArraySpec


def recorded_specs(attrs: Mapping) -> dict[str, list[ArraySpec]]:
    """Each part's array specs as the version records them (colorfeat/1 before the record)."""
    recorded = attrs.get(schema.ATTR_PARTS)
    if not isinstance(recorded, dict):
        return {"": list(schema.ARRAYS.values())}
    return {name: [ArraySpec.from_dict(d) for d in specs] for name, specs in recorded.items()}


def check_version(
    group: zarr.Group,
    files: Mapping[str, int] | set[str] | None = None,
    parts: Sequence[Part] | None = None,
) -> None:
    """Raise UserError unless `group` is a complete version: its parts' arrays (and, given the
    `parts` that publish it, their own checks), and with `files` (relative path, or path -> size)
    every chunk present and the manifest's files and sizes."""
    attrs = dict(group.attrs)
    check = Check(group, attrs, str(getattr(group.store, "root", group.store)))
    check.need(attrs.get("schema") == STORE_SCHEMA, f"schema is {attrs.get('schema')!r}")
    if parts is None:
        specs = [s for found in recorded_specs(attrs).values() for s in found]
    else:
        specs = [s for part in parts for s in part.arrays]
    for spec in specs:
        _check_spec(check, spec)
    for part in parts or ():
        if part.check is not None:
            part.check(check)
    if files is not None:
        _check_chunks(check, files)


def _check_spec(check: Check, spec: ArraySpec) -> None:
    for split in check.splits if spec.per_split else [None]:
        for path in _expand(check.group, spec.where(split)):
            check.need(path in check.group, f"{path} is missing")
            arr = check.group[path]
            ok = dtype_name(arr) == spec.dtype and arr.ndim == spec.ndim
            check.need(
                ok, f"{path} is {arr.dtype} {arr.shape}, not {spec.dtype} of rank {spec.ndim}"
            )
            check.need(set(spec.attrs) <= set(arr.attrs), f"{path} attrs lack {spec.attrs}")
            if spec.rows is not None:
                rows = check.group[schema.split_path(split, schema.ROW_ARRAYS[spec.rows])]
                check.need(arr.shape[0] == rows.shape[0], f"{path} rows")


def _expand(group: zarr.Group, path: str) -> Iterator[str]:
    """`path`, or for `<group>/*` the path of every array in that group (none if it is absent)."""
    if not path.endswith("/*"):
        yield path
        return
    parent = path[:-2]
    if parent in group:
        yield from (f"{parent}/{name}" for name in sorted(group[parent].array_keys()))


def _check_chunks(check: Check, files: Mapping[str, int] | set[str]) -> None:
    for path, arr in arrays(check.group):
        missing = [k for k, _ in chunk_regions(arr) if f"{path}/{k}" not in files]
        check.need(not missing, f"{path} lacks {len(missing)} chunks, e.g. {missing[:1]}")


def check_manifest(where: str, manifest: Mapping[str, tuple[int, int]], files: Mapping[str, int]):
    """UserError unless every file the manifest lists is present with its size."""
    check = Check(zarr.group(), {}, where)  # only `need` is used
    missing = sorted(set(manifest) - set(files))
    check.need(not missing, f"{len(missing)} files of its manifest are missing, e.g. {missing[:1]}")
    wrong = sorted(k for k, (size, _) in manifest.items() if files[k] != size)
    check.need(not wrong, f"{len(wrong)} files differ in size from its manifest, e.g. {wrong[:1]}")
