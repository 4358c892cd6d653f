"""The architecture holds: one stage table, options declared once, imports that run one way."""

from __future__ import annotations

import ast
import functools
import inspect
import json
import subprocess
import sys
from pathlib import Path

import yaml

from colorfeat.config import PipelineConfig, rebuild_options
from colorfeat.hashing import file_sha256
from colorfeat.stages import Context, Stage, registered

ROOT = Path(__file__).resolve().parents[1]


def count_colour_words(ctx: Context) -> dict:
    """A test-only stage: the colour words of the kept captions, written to its own directory."""
    words = ctx.inputs["captions"]["counts"]["colour_words"]
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    path = ctx.out_dir / "colour_words.json"
    path.write_text(json.dumps(words, sort_keys=True))
    return {"path": str(path), "words": len(words)}


COLOUR_WORDS = Stage(
    "colour_words",
    count_colour_words,
    reads=("captions",),
    config=lambda c: {"lexicon": file_sha256(c.lexicon)},
    version=1,
)

# Run in a fresh interpreter where Prefect and Typer cannot be imported.
LIBRARY_ONLY = """
import importlib, importlib.abc, json, pkgutil, sys

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("prefect", "typer"):
            raise ModuleNotFoundError(f"{name} is blocked")

sys.meta_path.insert(0, Blocked())
import colorfeat, colortrain
imported = []
for package in (colorfeat, colortrain):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(info.name)
        imported.append(info.name)

from colorfeat.config import BackboneConfig, PipelineConfig
from colorfeat.stages.runner import plan_keys, run_stages
from colorfeat.stages import registered
from tests.test_architecture import COLOUR_WORDS

work = sys.argv[1]
config = PipelineConfig(
    source="synthetic", store=work + "/store", work_dir=work, limit=10, device="cpu",
    backbone=BackboneConfig(backbone="resnet18", weights="none", image_size=32),
)
with registered(COLOUR_WORDS):
    run = run_stages(config)
    planned = plan_keys(config, run.results["acquire"]["identity"])
print(json.dumps({
    "imported": imported, "planned": planned, "keys": run.keys, "version": run.version,
    "colour_words": run.results["colour_words"],
    "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("prefect", "typer")),
}))
"""


def test_the_library_imports_and_runs_the_stage_table_without_prefect_or_typer(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", LIBRARY_ONLY, str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.splitlines()[-1])
    assert {"colorfeat.stages", "colorfeat.stages.runner", "colortrain.train"} <= set(
        out["imported"]
    )
    assert out["loaded"] == []
    # The test-only stage ran through the real runner, has a key in the plan and a directory.
    assert out["planned"] == out["keys"] and "colour_words" in out["keys"]
    written = json.loads(Path(out["colour_words"]["path"]).read_text())
    assert written and out["colour_words"]["words"] == len(written)
    assert Path(out["colour_words"]["path"]).parent.name == out["keys"]["colour_words"]
    version = Path(out["version"]["path"])
    attrs = json.loads((version / "zarr.json").read_text())["attributes"]
    assert "colour_words" in attrs["config"] and out["version"]["published"]


def test_a_registered_stage_is_planned_and_leaves_the_table_after():
    from colorfeat import stages
    from colorfeat.stages.plan import plan_rebuild

    config = PipelineConfig(device="cpu")
    with registered(COLOUR_WORDS):
        assert list(stages.STAGES)[-2:] == ["colour_words", "publish"]
        plan = plan_rebuild(config, "src")
    assert plan["colour_words"].key.startswith("colour_words-")
    assert "colour_words" not in stages.STAGES
    assert "colour_words" not in plan_rebuild(config, "src")


def test_run_and_schedule_offer_exactly_the_config_options():
    import typer.main

    from flows.cli.colorfeat import app

    names = [o.name for o in rebuild_options()]
    commands = typer.main.get_command(app).commands
    run = [p.name for p in commands["run"].params]
    schedule = [p.name for p in commands["schedule"].params]
    assert run == [*names, "dry_run"]
    assert schedule == ["cron", "timezone", "name", "keep_last", "keep_days", *names]
    fields = {o.name: o for o in rebuild_options()}
    limit = next(p for p in commands["run"].params if p.name == "limit")
    assert limit.help == fields["limit"].help and limit.required is False


def test_the_flow_and_the_deployment_take_the_config_as_one_parameter():
    from flows.pipeline import rebuild

    assert list(inspect.signature(rebuild.fn).parameters)[0] == "config"
    spec = yaml.safe_load((ROOT / "flows" / "prefect.yaml").read_text())
    weekly = next(d for d in spec["deployments"] if d["name"] == "weekly-rebuild")
    assert set(weekly["parameters"]) == {"config"}
    options = weekly["parameters"]["config"]
    assert set(options) <= {o.name for o in rebuild_options()}
    config = PipelineConfig.from_options(**options)  # validates
    assert config.to_options() == {**PipelineConfig.from_options().to_options(), **options}


# --------------------------------------------------------------------------- the import graph
PACKAGES = ("colorfeat", "colortrain", "flows")
# What each package may not import, lazily or not: the layers are, top down, the command-line
# programs (flows.cli), the flows (Prefect), colortrain, colorfeat.
FORBIDDEN = {
    "colorfeat": ("flows", "colortrain", "typer", "prefect"),
    "colortrain": ("flows", "typer", "prefect"),
    "flows": ("flows.cli", "typer"),
}
CLI = "flows.cli"


def package_modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the packages by dotted name (a package is its __init__.py)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """What a module imports anywhere in it (inside functions too), by dotted name.

    `from pkg import x` is `pkg.x` when that is a module, else `pkg`: a submodule that takes
    names from its package imports the package's __init__; one that imports a sibling does not.
    """
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = here[: len(here) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return found


@functools.cache
def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the modules and outside packages it imports (do not change the answer)."""
    modules = package_modules(root)
    return {name: imports_of(name, path, set(modules)) for name, path in modules.items()}


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """`module imports target` for every import that runs up the layers."""
    bad = []
    for module, targets in sorted(graph.items()):
        package = module.split(".")[0]
        for target in sorted(targets):
            if any(_within(target, f) for f in FORBIDDEN[package]) and not _within(module, CLI):
                bad.append(f"{module} imports {target}")
    return bad


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each group of modules that import each other (a strongly connected component), as one
    cycle through it: [a, b, ..., a]."""
    inside = {m: sorted(t for t in targets if t in graph) for m, targets in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in inside[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = stack[stack.index(v) :]
            del stack[stack.index(v) :]
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(inside):
        if module not in index:
            visit(module)
    return [_cycle_in(group, inside) for group in groups]


def _cycle_in(group: list[str], inside: dict[str, list[str]]) -> list[str]:
    """A shortest cycle from the group's first module back to it, within the group."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in inside[v]:
                if w == start:
                    return [*paths[v], start]
                if w in members and w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start}")  # a component always has one


def test_every_import_of_the_packages_names_a_module_that_exists():
    graph = import_graph()
    missing = [
        f"{module} imports {target}"
        for module, targets in sorted(graph.items())
        for target in sorted(targets)
        if target.split(".")[0] in PACKAGES and target not in graph
    ]
    assert missing == []


def test_imports_run_down_the_layers():
    assert layer_violations(import_graph()) == []


def test_no_modules_import_each_other():
    assert [" -> ".join(c) for c in import_cycles(import_graph())] == []


def _tree(tmp_path: Path, files: dict[str, str]) -> dict[str, set[str]]:
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    for package in PACKAGES:
        (tmp_path / package).mkdir(exist_ok=True)
        (tmp_path / package / "__init__.py").touch()
    return import_graph(tmp_path)


def test_the_graph_sees_lazy_relative_and_submodule_imports_and_reports_cycles(tmp_path):
    graph = _tree(tmp_path, {
        "colorfeat/a.py": "def f():\n    from colorfeat import b\n",
        "colorfeat/b.py": "from . import c\n",
        "colorfeat/c.py": "import colorfeat.a\n",
        "colorfeat/pkg/__init__.py": "from colorfeat.pkg.sub import X\n",
        "colorfeat/pkg/sub.py": "from colorfeat.pkg import other\nfrom colorfeat.errors import E\n",
        "colorfeat/pkg/other.py": "",
        "colorfeat/bad.py": "def f():\n    import typer\n    from flows.cli import x\n",
        "colortrain/t.py": "if True:\n    from prefect import flow\n",
        "flows/f.py": "from flows.cli.colorfeat import app\n",
        "flows/cli/__init__.py": "",
        "flows/cli/colorfeat.py": "import typer\nfrom flows import f\n",
    })  # fmt: skip
    assert graph["colorfeat.a"] == {"colorfeat.b"}
    assert graph["colorfeat.b"] == {"colorfeat.c"}
    assert graph["colorfeat.pkg.sub"] == {"colorfeat.pkg.other", "colorfeat.errors"}
    # The package importing its submodule is no cycle; a. b, c importing in a ring is one.
    cycles = import_cycles(graph)
    assert ["colorfeat.a", "colorfeat.b", "colorfeat.c", "colorfeat.a"] in cycles
    assert ["flows.cli.colorfeat", "flows.f", "flows.cli.colorfeat"] in cycles and len(cycles) == 2
    assert layer_violations(graph) == [
        "colorfeat.bad imports flows.cli",
        "colorfeat.bad imports typer",
        "colortrain.t imports prefect",
        "flows.f imports flows.cli.colorfeat",
    ]
