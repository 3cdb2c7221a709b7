"""The package's layout rules, checked on the source: one package (no top-level `addons`), no import cycles, and
the arrows the design draws — only the proxy wiring and the addon stack import mitmproxy, the parsers are pure."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# addons/ is installed as aigw_proxy.addons (setup.py's package_dir)
ROOTS = {"aigw_proxy": REPO / "aigw_proxy", "aigw_proxy.addons": REPO / "addons"}


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for prefix, root in ROOTS.items():
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([prefix, *parts])] = path
    return found


def _in_type_checking(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Our modules that `name` imports (at any depth of the file, TYPE_CHECKING blocks excepted)."""
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if _in_type_checking(node, parents):
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_package else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join([*pkg, base] if base else pkg)
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports(name, path, known) for name, path in mods.items()}


def test_no_top_level_addons_package_is_imported() -> None:
    offenders = [
        f"{path.relative_to(REPO)}:{n}"
        for path in [*REPO.glob("aigw_proxy/**/*.py"), *REPO.glob("addons/*.py"), *REPO.glob("tests/**/*.py"),
                     *REPO.glob("bench/**/*.py")]
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if line.startswith(("from addons", "import addons"))
    ]
    assert offenders == []


def test_there_is_no_import_cycle() -> None:
    g = graph()
    # Package __init__ modules re-export their children: an edge child -> package is the child importing a
    # sibling through the package's public surface, which is not a cycle unless the package imports it back.
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(g[node]):
            if nxt.startswith(node + "."):  # a package importing its own children
                continue
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node, [])
    assert cycles == []


def test_only_the_proxy_wiring_and_the_addons_import_mitmproxy() -> None:
    allowed = ("aigw_proxy.addons", "aigw_proxy.proxy")
    offenders = []
    for name, path in modules().items():
        if name.startswith(allowed):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            mod = node.module if isinstance(node, ast.ImportFrom) else None
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [mod or ""]
            if any(n == "mitmproxy" or n.startswith("mitmproxy.") for n in names):
                offenders.append(name)
    assert offenders == []


def test_the_parsers_are_pure() -> None:
    g = graph()
    parsers = [n for n in g if n.startswith("aigw_proxy.intercept.parsing")]
    assert parsers
    for name in parsers:
        outside = {m for m in g[name] if not m.startswith(("aigw_proxy.intercept.parsing", "aigw_proxy.recording"))}
        assert outside == set(), f"{name} imports {outside}"


def test_shared_file_helpers_live_in_one_leaf_module() -> None:
    """`aigw_proxy.fsutil` is the one home of the file-system helpers the CA store and the database tools share:
    it imports nothing of ours (any package may use it), and no other module keeps its own copy."""
    g = graph()
    assert g["aigw_proxy.fsutil"] == set()
    helpers = {node.name for node in ast.walk(ast.parse(modules()["aigw_proxy.fsutil"].read_text()))
               if isinstance(node, ast.FunctionDef)}
    copies = [
        f"{name}.{node.name}"
        for name, path in modules().items() if name != "aigw_proxy.fsutil"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef) and node.name.lstrip("_") in helpers
    ]
    assert copies == []
    assert {"aigw_proxy.proxy.ca", "aigw_proxy.storage.maintenance"} <= {n for n, deps in g.items()
                                                                        if "aigw_proxy.fsutil" in deps}
