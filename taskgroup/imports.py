"""The library modules a source file imports, found by parsing it (no code is run).

The workflow lists, for every job, the library files its script imports (directly or through
other library modules) as ``code`` inputs: Snakemake's code trigger watches only the script
itself, so an edit to the library would otherwise leave stale results. The tests use the
same graph to check that the library's parts import one way only.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

LIBRARY = "taskgroup"


def module_file(module: str, root: Path) -> Path | None:
    """The source file of ``module`` (a dotted name) under ``root``: ``<root>/a/b.py`` or
    ``<root>/a/b/__init__.py``; None when it is not a module of the library."""
    parts = module.split(".")
    if parts[0] != LIBRARY:
        return None
    base = Path(root).joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path, root: Path) -> str:
    """The dotted name of library file ``path`` under ``root`` (a package: its folder)."""
    parts = Path(path).relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: Path, package: str = "") -> set[str]:
    """Every module name that ``source`` imports anywhere (also inside functions), with
    relative imports resolved against ``package`` (the importer's ``__package__``); for
    ``from a import b`` both ``a`` and ``a.b`` (b may be a submodule).

    Raises SyntaxError (naming the file) when ``source`` does not parse."""
    modules = set()
    for node in statements(ast.parse(Path(source).read_text(), filename=str(source))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module
            modules.add(base)
            modules.update(f"{base}.{alias.name}" for alias in node.names)
    return modules


def statements(tree: ast.AST):
    """Every statement of ``tree``, nested ones too (function and class bodies, branches,
    handlers, match cases), without visiting expressions: an import is always a statement,
    and expressions are most of a module's nodes."""
    pending = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.stmt):
            yield node
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            children = getattr(node, field, None)
            if isinstance(children, list):
                pending.extend(children)


def direct_library_files(source: Path, root: Path, package: str = "") -> frozenset[Path]:
    """The library files ``source`` imports directly, with the ``__init__.py`` of every
    package on the way (importing ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py``)."""
    source = Path(source)
    return _direct_library_files(source, Path(root), package, source.stat().st_mtime_ns)


# The workflow asks for every rule's closure at parse time: without the cache each library file
# is parsed once per rule that imports it (most of a dry run's CPU time). The modification
# time is part of the key, so an edited file is parsed again.
@functools.lru_cache(maxsize=None)
def _direct_library_files(source: Path, root: Path, package: str, mtime_ns: int):
    files = set()
    for module in imported_modules(source, package):
        parts = module.split(".")
        for depth in range(1, len(parts) + 1):
            path = module_file(".".join(parts[:depth]), root)
            if path is not None:
                files.add(path)
    return frozenset(files)


def library_files(script: Path, root: Path) -> list[Path]:
    """Every library file under ``root`` that ``script`` imports, directly or through other
    library modules (the transitive closure), sorted."""
    seen: set[Path] = set()
    pending = [(Path(script), "")]
    while pending:
        source, package = pending.pop()
        for path in direct_library_files(source, root, package):
            if path not in seen:
                seen.add(path)
                pending.append((path, ".".join(path.relative_to(root).parent.parts)))
    return sorted(seen)
