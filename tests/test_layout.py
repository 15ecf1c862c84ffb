"""The house's plan holds (issue 27): no import cycle between equinorm's modules, function-local
imports counted; the four nouns depend one way (experiment <- run <- train <- launch, and report
on experiment and run only); nothing imports the launcher; Hydra's internals appear only as the
sweeper's base class; every file the docs and the code name is in the repository."""

from __future__ import annotations

import ast
import importlib.util
import re
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
# package -> the packages it may import (besides the lower layers and its own modules)
ALLOWED = {
    "experiment": set(),
    "run": {"experiment"},
    "report": {"experiment", "run"},
    "train": {"experiment", "run"},
    "launch": {"experiment", "run", "train", "report"},
    "bench": {"run", "report"},  # a tool: the device's description, the norms' colours
}


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / "equinorm").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The equinorm modules ``name`` imports anywhere in its file (top level or in functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(path, name, set(mods)) for name, path in mods.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one node (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in list(edges):
        if v not in index:
            visit(v)
    return found


def test_cycles_are_found_where_there_are_some():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_back_through_others():
    assert cycles(graph()) == []


def test_the_four_nouns_depend_one_way_and_nothing_imports_the_launcher():
    wrong = defaultdict(set)
    for module, targets in graph().items():
        mine = module.split(".")[1] if "." in module else ""
        for target in targets:
            theirs = target.split(".")[1] if "." in target else ""
            if mine == theirs or theirs not in ALLOWED:
                continue
            if (mine in ALLOWED and theirs not in ALLOWED[mine]) or mine not in ALLOWED:
                wrong[module].add(target)
    assert dict(wrong) == {}


def test_hydra_internals_only_as_the_sweepers_base_class():
    users = {name for name, path in modules().items() if "hydra._internal" in path.read_text()}
    assert users == {"equinorm.launch.sweeper"}
    assert importlib.util.find_spec("hydra_plugins.equinorm_sweeper") is not None


ROOT = SRC.parent
TOP = ("conf", "docs", "notebooks", "results", "scripts", "src", "tests", "tools")
PACKAGES = tuple(p.name for p in (SRC / "equinorm").iterdir() if (p / "__init__.py").exists())
NAMED = re.compile(  # a path from the root or from src/equinorm, or a top-level page (SPEC.md)
    rf"(?<![\w/.<$-])((?:{'|'.join(TOP + PACKAGES)})/[\w./-]+?"
    r"\.(?:md|py|yaml|yml|ipynb|csv|json|png|sh|lock)|[A-Z]+\.md)\b"
)
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)\s]*)?\)")  # a Markdown link's target


def missing_files(text: str, where: Path) -> set[str]:
    """The files that ``text`` (the file ``where``) names and the repository does not hold."""
    refs = {m.group(1) for m in NAMED.finditer(text)}
    if where.suffix == ".md":
        refs |= {m.group(1) for m in LINK.finditer(text) if not m.group(1).startswith("http")}
    bases = (ROOT, SRC / "equinorm", where.parent)
    return {ref for ref in refs if not any((base / ref).exists() for base in bases)}


def test_every_file_the_docs_and_the_code_name_is_in_the_repository():
    """The README once cited "SPEC section N" and DESIGN.md, files outside the repository."""
    example = (
        "as DESIGN.md says ([the spec](docs/nothing.md), docs/spec.md, experiment/identity.py)"
    )
    assert missing_files(example, ROOT / "x.md") == {"DESIGN.md", "docs/nothing.md"}
    pages = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "results").rglob("*.md")]
    code = [*(SRC / "equinorm").rglob("*.py"), *(ROOT / "scripts").iterdir(), ROOT / "Makefile"]
    code += [*(ROOT / "conf").rglob("*.yaml"), *(ROOT / "tests").glob("*.py")]
    found = {
        str(p.relative_to(ROOT)): missing_files(p.read_text(), p)
        for p in pages + code
        if p.is_file() and p != Path(__file__).resolve()
    }
    assert {name: refs for name, refs in found.items() if refs} == {}
