"""The release package's import structure: no cycle among its modules and no private name
imported across them (issue #22 item 6).

The imports are read from the sources with ``ast`` (module-level and function-level alike, since a
function-level import only hides a cycle until the function runs), so the test needs nothing
imported. Each check is also run on small packages built to break it, so a checker that stopped
seeing cycles or private imports would fail here.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

import rcig_release.release

PACKAGE = "rcig_release.release"


def package_sources() -> dict[str, str]:
    root = Path(rcig_release.release.__file__).parent
    return {p.stem: p.read_text(encoding="utf-8") for p in sorted(root.glob("*.py"))}


def _target(node: ast.ImportFrom, modules: set[str]) -> tuple[str | None, bool]:
    """The package module an ``ImportFrom`` reads names from (None: not one of the package's), and
    whether its names are modules of the package (``from rcig_release.release import x``)."""
    mod = node.module or ""
    if node.level == 1:  # relative: from .x import y / from . import x
        return (mod.split(".")[0], False) if mod else (None, True)
    if node.level == 0 and mod == PACKAGE:
        return None, True
    if node.level == 0 and mod.startswith(PACKAGE + "."):
        return mod.split(".")[2], False
    return None, False


def release_imports(
    sources: dict[str, str],
) -> tuple[dict[str, set[str]], list[str]]:
    """The import graph among the package's modules (``__init__`` included) and every place one
    module takes an underscore name from another (``from m import _x``, ``m._x``)."""
    modules = set(sources)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    private: list[str] = []
    for name, text in sources.items():
        tree = ast.parse(text)
        aliases: dict[str, str] = {}  # local name -> package module bound to it
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    parts = a.name.split(".")
                    if a.name.startswith(PACKAGE + ".") and parts[2] in modules:
                        graph[name].add(parts[2])
                        if a.asname:
                            aliases[a.asname] = parts[2]
            elif isinstance(node, ast.ImportFrom):
                target, names_are_modules = _target(node, modules)
                if names_are_modules:
                    for a in node.names:
                        if a.name in modules:
                            graph[name].add(a.name)
                            aliases[a.asname or a.name] = a.name
                        elif a.name.startswith("_"):
                            private.append(f"{name}:{node.lineno} imports {a.name}")
                elif target in modules:
                    graph[name].add(target)
                    for a in node.names:
                        if a.name.startswith("_") and not a.name.startswith("__"):
                            private.append(f"{name}:{node.lineno} imports {a.name} from {target}")
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and aliases[node.value.id] != name
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                private.append(f"{name}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
        graph[name].discard(name)
    return graph, private


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as e:
        return list(e.args[1])
    return None


def test_release_package_has_no_import_cycle():
    graph, _ = release_imports(package_sources())
    assert len(graph) > 10  # the package's modules were found
    assert graph["verify"] >= {"consistency", "layout", "derived"}  # the edges were read
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph) or [])}"


def test_checking_side_does_not_import_the_writer():
    graph, _ = release_imports(package_sources())
    for checker in ("verify", "consistency", "layout", "derived"):
        assert "bundle" not in graph[checker], checker


def test_release_package_imports_no_private_name_across_modules():
    _, private = release_imports(package_sources())
    assert private == []


# The checks on packages built to break them.

BROKEN_CYCLE = {
    "__init__": "",
    "bundle": "from rcig_release.release.verify import verify_files\n",
    "verify": "from rcig_release.release import consistency\n",
    # the cycle closes inside a function, as the old one did
    "consistency": "def f():\n    from rcig_release.release.bundle import CROISSANT\n",
    "layout": "from .bundle import labels_csv\n",
}


def test_a_cycle_through_a_function_level_import_is_found():
    graph, _ = release_imports(BROKEN_CYCLE)
    cycle = find_cycle(graph)
    assert cycle is not None and {"bundle", "verify", "consistency"} <= set(cycle)
    fixed = dict(BROKEN_CYCLE, consistency="def f():\n    from .derived import CROISSANT\n")
    fixed["derived"] = "CROISSANT = 'croissant.json'\n"
    graph, _ = release_imports(fixed)
    assert find_cycle(graph) is None


@pytest.mark.parametrize(
    "source",
    [
        "from rcig_release.release.bundle import _json_bytes\n",
        "def f():\n    from .bundle import _sanitize\n",
        "from rcig_release.release import bundle\nx = bundle._sanitize\n",
        "from rcig_release.release import bundle as b\nx = b._sanitize\n",
        "import rcig_release.release.bundle as b\nx = b._json_bytes\n",
    ],
)
def test_a_private_import_across_modules_is_found(source):
    sources = {"bundle": "def _json_bytes(): ...\ndef _sanitize(): ...\n", "other": source}
    _, private = release_imports(sources)
    assert len(private) == 1 and private[0].startswith("other:")


def test_public_names_and_own_private_names_pass():
    sources = {
        "bundle": "def _helper(): ...\nx = _helper()\n",
        "other": "from __future__ import annotations\nfrom rcig_release.release.bundle import x\n",
    }
    _, private = release_imports(sources)
    assert private == []
