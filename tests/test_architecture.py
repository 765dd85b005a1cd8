"""``docs/architecture.md`` is true: every import arrow of ``src/xpmat`` is one its tables allow.

The page holds five tables: the topic modules of ``_array`` in their import order, the floors
(module patterns, and whether torch may be imported at import time), what each floor may
import, the known exceptions, and the private names a test may use outside its mirror file.
This test parses them from the Markdown and reads the imports of every module (and of every
test file) with ``ast``, so the page and the code cannot disagree: a new arrow the table does
not allow, a module on no floor, a torch import at import time on a torch-free floor, a cycle,
an ``_array`` module importing one of a later row, a test using a private name of a module it
does not mirror, or an exception that no longer exists all fail here.
"""

from __future__ import annotations

import ast
import fnmatch
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "xpmat"
TESTS = REPO / "tests"
PAGE = REPO / "docs" / "architecture.md"
FRAMEWORKS = {"torch", "cupy", "jax"}  # "detect, do not import" on the torch-free floors

pytestmark = pytest.mark.skipif(not PAGE.is_file() or not SRC.is_dir(), reason="no source tree")


# ----------------------------------------------------------------------------- the page


def _table(text: str, header: list[str], empty_ok: bool = False) -> list[list[str]]:
    """The rows (cells stripped) of the Markdown table whose header row is ``header`` (no row:
    an error unless ``empty_ok``)."""
    lines = text.splitlines()
    for k, line in enumerate(lines):
        if line.startswith("|") and [c.strip() for c in line.strip().strip("|").split("|")] == header:
            rows = []
            for row in lines[k + 2:]:  # skip the |---| line
                if not row.startswith("|"):
                    break
                rows.append([c.strip() for c in row.strip().strip("|").split("|")])
            assert rows or empty_ok, f"{PAGE.name}: the table {header} is empty"
            return rows
    raise AssertionError(f"{PAGE.name}: no table with the header {header}")


def _names(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def _floors_of_cell(cell: str) -> list[str]:
    return [f.strip() for f in cell.split(",") if f.strip()]


def read_page(text: str):
    """``(floors, allowed, exceptions)`` from the page's three tables.

    floors: ``[(floor, [patterns], torch_at_import)]`` in order (first match wins);
    allowed: ``{floor: set of floors it may import}``; exceptions: ``{(importer, target): why}``.
    """
    floors = [(row[0], _names(row[1]), row[2] == "yes")
              for row in _table(text, ["floor", "modules", "torch at import"])]
    allowed = {row[0]: set(_floors_of_cell(row[1])) for row in _table(text, ["floor", "may import"])}
    exceptions = {}
    for row in _table(text, ["from", "to", "why"], empty_ok=True):
        (src,), (dst,) = _names(row[0]), _names(row[1])
        exceptions[(src, dst)] = row[2]
    return floors, allowed, exceptions


def read_array_order(text: str) -> list[tuple[str, set[str]]]:
    """``[(module, {the _array modules it imports})]`` from the "Inside ``_array``" table, in
    its order (short names: ``_dtypes``)."""
    rows = _table(text, ["`_array` module", "holds", "imports"])
    return [(_names(row[0])[0], set(_names(row[2]))) for row in rows]


# ----------------------------------------------------------------------------- the code


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _resolve(base: str, name: str | None, known: dict[str, Path]) -> str:
    """``from base import name``: the module ``base.name`` when there is one, else ``base``."""
    if name and f"{base}.{name}" in known:
        return f"{base}.{name}"
    return base


def _framework_imports_at_import_time(tree: ast.Module) -> list[str]:
    """torch / cupy / jax imported by statements that run when the module is imported (module
    level and class bodies, inside ``if`` / ``try`` too; not inside a function, not under
    ``if TYPE_CHECKING:``)."""
    found = []

    def visit(nodes):
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)  # annotations only: never runs
                continue
            if isinstance(node, ast.Import):
                found.extend(a.name for a in node.names if a.name.split(".")[0] in FRAMEWORKS)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                if node.module.split(".")[0] in FRAMEWORKS:
                    found.append(node.module)
            visit(ast.iter_child_nodes(node))

    visit(tree.body)
    return found


def arrows(known: dict[str, Path]) -> dict[str, set[str]]:
    """``{module: the xpmat modules it imports}`` (anywhere in its file)."""
    out = {}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.split(".")[0] == "xpmat"}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                if base.split(".")[0] == "xpmat":
                    targets |= {_resolve(base, a.name, known) for a in node.names}
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                  and node.func.attr == "import_module" and node.args
                  and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
                  and node.args[0].value.split(".")[0] == "xpmat"):
                targets.add(node.args[0].value)
        out[name] = {t for t in targets if t != name}
    return out


def floor_of(module: str, floors) -> str | None:
    for floor, patterns, _ in floors:
        if any(fnmatch.fnmatchcase(module, p) for p in patterns):
            return floor
    return None


def violations(edges: dict[str, set[str]], floors, allowed, exceptions) -> list[str]:
    """Arrows the tables do not allow (the known exceptions left out)."""
    bad = []
    for src, targets in sorted(edges.items()):
        for dst in sorted(targets):
            if (src, dst) in exceptions:
                continue
            a, b = floor_of(src, floors), floor_of(dst, floors)
            if b not in allowed.get(a, set()):
                bad.append(f"{src} ({a}) -> {dst} ({b})")
    return bad


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the import graph, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(u):
        state[u] = 1
        stack.append(u)
        for v in sorted(edges.get(u, ())):
            if state.get(v) == 1:
                return [*stack[stack.index(v):], v]
            if v not in state and (found := dfs(v)):
                return found
        stack.pop()
        state[u] = 2
        return None

    for u in sorted(edges):
        if u not in state and (found := dfs(u)):
            return found
    return None


# ----------------------------------------------------------------------------- the checks


@pytest.fixture(scope="module")
def page():
    return read_page(PAGE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def edges():
    return arrows(modules())


def test_the_tables_name_the_same_floors(page):
    floors, allowed, _ = page
    names = [f for f, _, _ in floors]
    assert len(names) == len(set(names)), f"a floor is listed twice: {names}"
    assert set(allowed) == set(names), "every floor has one row in 'What may import what'"
    unknown = {f for targets in allowed.values() for f in targets} - set(names)
    assert not unknown, f"'What may import what' names floors that do not exist: {sorted(unknown)}"


def test_every_module_is_on_a_floor(page):
    floors = page[0]
    homeless = [m for m in modules() if floor_of(m, floors) is None]
    assert not homeless, f"put these modules on a floor in docs/architecture.md: {homeless}"


def test_every_arrow_is_allowed(page, edges):
    bad = violations(edges, *page)
    assert not bad, ("imports that docs/architecture.md does not allow (fix the import, or allow "
                     "the arrow / list it as a known exception with its reason):\n" + "\n".join(bad))


def test_known_exceptions_still_exist_and_are_exceptions(page, edges):
    floors, allowed, exceptions = page
    for (src, dst), why in exceptions.items():
        assert why, f"known exception {src} -> {dst} needs a reason"
        assert dst in edges.get(src, set()), f"{src} no longer imports {dst}: delete its row"
        assert floor_of(dst, floors) not in allowed[floor_of(src, floors)], (
            f"{src} -> {dst} is allowed by the table: it is no exception, delete its row")


def test_no_import_cycle(edges):
    found = cycle(edges)
    assert found is None, "import cycle: " + " -> ".join(found)


def test_array_modules_import_in_the_order_the_page_gives(edges):
    """``_array``'s topic modules import each other only down the page's table (a DAG, whose
    order is the table's), and exactly as its ``imports`` column says."""
    order = read_array_order(PAGE.read_text(encoding="utf-8"))
    bad = array_order_violations(edges, order)
    assert not bad, "docs/architecture.md, 'Inside _array':\n" + "\n".join(bad)


def test_tests_use_private_names_only_in_the_file_that_mirrors_them():
    """A test reaches xpmat through public names; a private module (``_array``, ``_optional``,
    ``optim._base``) or a private name of a module is used only by the one test file that
    mirrors it, and by the rows of the page's "Private names in tests" table."""
    rows = _table(PAGE.read_text(encoding="utf-8"), ["test", "private name", "why"], empty_ok=True)
    allowed = {(_names(r[0])[0], _names(r[1])[0]) for r in rows}
    known = modules()
    uses = {str(p.relative_to(TESTS)): private_uses(p.read_text(encoding="utf-8"), known)
            for p in sorted(TESTS.rglob("*.py"))
            if p.name != Path(__file__).name}  # this file reads names as data, it uses none
    bad = private_import_violations(uses, allowed)
    assert not bad, "\n".join(bad)
    used = {(n, w) for n, found in uses.items() for _, w in found}
    assert allowed <= used, f"rows of 'Private names in tests' that no test uses: {allowed - used}"


def test_torch_free_floors_do_not_import_torch_at_import_time(page):
    floors = page[0]
    torch_ok = {f for f, _, ok in floors if ok}
    bad = []
    for name, path in modules().items():
        if floor_of(name, floors) in torch_ok:
            continue
        found = _framework_imports_at_import_time(ast.parse(path.read_text(encoding="utf-8")))
        bad += [f"{name} imports {lib} at import time" for lib in found]
    assert not bad, "\n".join(bad)


def array_order_violations(edges: dict[str, set[str]], order) -> list[str]:
    """Where the ``_array`` submodules disagree with the page's table: a module missing from it
    (or listed but absent), an import of a module of a later row (or of the package itself, or
    of itself), an import the row does not list, or one it lists that the code lacks."""
    pkg = "xpmat._array"
    listed = [m for m, _ in order]
    actual = sorted(m.rpartition(".")[2] for m in edges if m.startswith(pkg + "."))
    bad = [f"{pkg}.{m} is not in the table" for m in actual if m not in listed]
    bad += [f"{pkg}.{m} is in the table but not in the code" for m in listed if m not in actual]
    for k, (mod, imports) in enumerate(order):
        got = {"the package" if t == pkg else t.rpartition(".")[2]
               for t in edges.get(f"{pkg}.{mod}", ()) if t == pkg or t.startswith(pkg + ".")}
        later = got - set(listed[:k])
        bad += [f"{pkg}.{mod} imports {t}, not a module of an earlier row" for t in sorted(later)]
        if got != imports:
            bad.append(f"{pkg}.{mod} imports {sorted(got)}, the table says {sorted(imports)}")
    return bad


# ----------------------------------------------------------------------------- private names in tests


def _private(part: str) -> bool:
    return part.startswith("_") and not part.endswith("__")


def mirror(module: str) -> str:
    """The test file (stem) that mirrors ``module``: ``xpmat.optim._base`` -> ``test_optim_base``,
    ``xpmat._array`` -> ``test_array``."""
    return "test_" + "_".join(p.lstrip("_") for p in module.split(".")[1:])


def private_uses(source: str, known: dict[str, Path]) -> list[tuple[str, str]]:
    """``[(module, what)]``: each private xpmat name a test source imports (``what`` is the
    dotted name), with the module that holds it; also a string that is such a dotted name
    (``monkeypatch.setattr("xpmat._x.f", ...)``, ``importlib.import_module``)."""
    found = []

    def module_path(dotted: str) -> None:
        parts = dotted.split(".")
        for k in range(2, len(parts) + 1):
            if _private(parts[k - 1]):
                head = ".".join(parts[:k])
                found.append((head if head in known else ".".join(parts[:k - 1]), dotted))
                return

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "xpmat":
                    module_path(a.name)
        elif isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("xpmat"):
            for a in node.names:
                module_path(f"{node.module}.{a.name}")
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and re.fullmatch(r"xpmat(\.[A-Za-z_]\w*)+", node.value)):
            module_path(node.value)
    return found


def private_import_violations(uses: dict[str, list[tuple[str, str]]], allowed: set) -> list[str]:
    """Private uses (``{test file: private_uses(...)}``) outside the test file that mirrors their
    module, less ``allowed`` ``{(test file, dotted name)}``."""
    bad = []
    for name, found in sorted(uses.items()):
        for module, what in found:
            if Path(name).stem != mirror(module) and (name, what) not in allowed:
                bad.append(f"{name} uses {what} (only {mirror(module)}.py may)")
    return bad


# ----------------------------------------------------------------------------- the test can fail


def test_the_check_catches_a_forbidden_arrow(page, edges):
    """A primitive importing the optimizer floor, a core importing the torch catalog, and a
    climb to the face are each reported, and a cycle is found."""
    broken = {k: set(v) for k, v in edges.items()}
    broken["xpmat.orthogonalize"].add("xpmat.optim.transforms")
    broken["xpmat.optim.muon"].add("xpmat.optim.torch_optim")
    broken["xpmat.kron"].add("xpmat")
    bad = set(violations(broken, *page)) - set(violations(edges, *page))
    assert bad == {"xpmat.orthogonalize (orthogonalize) -> xpmat.optim.transforms (transforms)",
                   "xpmat.optim.muon (methods) -> xpmat.optim.torch_optim (torch classes)",
                   "xpmat.kron (primitives) -> xpmat (face)"}
    assert cycle({**broken, "xpmat.optim.transforms": broken["xpmat.optim.transforms"]
                  | {"xpmat.optim.muon"}}) is not None  # transforms -> muon -> transforms


def test_the_array_order_check_catches_a_climb(edges):
    """An ``_array`` module importing a later row, or the package, is reported; so is a module
    the table does not list."""
    order = read_array_order(PAGE.read_text(encoding="utf-8"))
    first, last = order[0][0], order[-1][0]
    broken = {k: set(v) for k, v in edges.items()}
    broken[f"xpmat._array.{first}"] |= {f"xpmat._array.{last}", "xpmat._array"}
    broken["xpmat._array._new_topic"] = set()
    bad = array_order_violations(broken, order)
    assert f"xpmat._array.{first} imports {last}, not a module of an earlier row" in bad
    assert f"xpmat._array.{first} imports the package, not a module of an earlier row" in bad
    assert "xpmat._array._new_topic is not in the table" in bad


def test_the_private_name_check_catches_each_form():
    """Private modules, private names of public modules and dotted strings are found (prose
    is not); the mirror file may use its own module's."""
    known = modules()
    src = ("import xpmat._array\nfrom xpmat import _optional, msign\n"
           "from xpmat.optim._base import resolve_rank\nfrom xpmat.optim.shampoo import _to_blocks\n"
           "def f(mp):\n    mp.setattr('xpmat._array.eigh', None)\n    'see xpmat._array'\n")
    assert private_uses(src, known) == [
        ("xpmat._array", "xpmat._array"), ("xpmat._optional", "xpmat._optional"),
        ("xpmat.optim._base", "xpmat.optim._base.resolve_rank"),
        ("xpmat.optim.shampoo", "xpmat.optim.shampoo._to_blocks"),
        ("xpmat._array", "xpmat._array.eigh")]
    tests = {"test_x.py": src, "test_array.py": "from xpmat import _array\n",
             "test_optim_shampoo.py": "from xpmat.optim.shampoo import _f\n"}
    bad = private_import_violations({n: private_uses(t, known) for n, t in tests.items()}, set())
    assert len(bad) == 5 and all(b.startswith("test_x.py") for b in bad)


def test_arrows_are_read_as_python_resolves_them(tmp_path):
    """``from xpmat import _array`` is an arrow to the module ``xpmat._array``; ``from xpmat
    import msign`` to the face; relative imports, lazy imports in a function and
    ``importlib.import_module("xpmat...")`` count."""
    known = {"xpmat": tmp_path / "__init__.py", "xpmat._array": tmp_path / "_array.py",
             "xpmat.optim": tmp_path / "optim" / "__init__.py",
             "xpmat.optim.muon": tmp_path / "optim" / "muon.py",
             "xpmat.optim.transforms": tmp_path / "optim" / "transforms.py"}
    for p in known.values():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("", encoding="utf-8")
    known["xpmat.optim.muon"].write_text(
        "from xpmat import _array, msign\nfrom . import transforms\n"
        "def f():\n    import importlib\n    importlib.import_module('xpmat.optim')\n", encoding="utf-8")
    got = arrows(known)["xpmat.optim.muon"]
    assert got == {"xpmat._array", "xpmat", "xpmat.optim.transforms", "xpmat.optim"}
    tree = ast.parse("import torch\ntry:\n    import cupy\nexcept ImportError:\n    pass\n"
                     "def g():\n    import jax\nif TYPE_CHECKING:\n    import jax.numpy\n")
    assert _framework_imports_at_import_time(tree) == ["torch", "cupy"]
