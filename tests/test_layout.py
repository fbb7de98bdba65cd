"""The library's layout: its parts import one way only, what Snakemake imports at parse time
loads no torch, and the import crawler behind the rules' code inputs follows imports."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from workflow_helpers import ROOT

from taskgroup.imports import direct_library_files, imported_modules, library_files, module_name

# Which parts each part may import (besides itself and the base modules). The order is
# data -> models -> estimate, data -> group -> report; stages glue them together.
ALLOWED = {
    "data": set(),
    "models": {"data"},
    "estimate": {"data", "models"},
    "group": {"data"},
    "report": {"data", "group"},
    "config": {"data", "group"},
    "stages": {"data", "models", "estimate", "group", "report", "config"},
}
BASE = {"seeding", "logs", "imports", "resources"}
# Single modules a part may import from a part it may not: the training options and the
# estimator's settings are plain, torch-free dataclasses that the config checks read at
# parse time.
ALLOWED_MODULES = {
    "config": {"taskgroup.models.options", "taskgroup.estimate", "taskgroup.estimate.settings"}
}
# Parts that never load torch: the clustering side is numpy/scikit-learn/cvxpy only.
TORCH_FREE = ("group", "report", "config", "imports", "logs")


def library_modules() -> dict[str, Path]:
    return {
        module_name(path, ROOT): path
        for path in sorted((ROOT / "taskgroup").rglob("*.py"))
    }


def import_graph() -> dict[str, set[str]]:
    modules = library_modules()
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        # A module's own parent packages are already imported when it runs: not an edge.
        parents = {".".join(name.split(".")[:depth]) for depth in range(1, name.count(".") + 1)}
        graph[name] = {
            module_name(file, ROOT) for file in direct_library_files(path, ROOT, package)
        } - {name} - parents
    return graph


def part_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "package"
    return parts[1]


def test_parts_import_one_way_only():
    offences = []
    for module, imported in import_graph().items():
        part = part_of(module)
        for other in imported:
            target = part_of(other)
            if target in ("package", part) or target in BASE:
                continue
            if target in ALLOWED.get(part, set()) or other in ALLOWED_MODULES.get(part, set()):
                continue
            offences.append(f"{module} imports {other} ({part} -> {target})")
    assert not offences, "\n".join(offences)


def test_library_has_no_import_cycle():
    graph = import_graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(module, path):
        state[module] = 1
        for other in sorted(graph[module]):
            if state.get(other) == 1:
                cycle = path[path.index(other):] + [other]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if other not in state:
                visit(other, path + [other])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


@pytest.mark.parametrize("part", TORCH_FREE)
def test_torch_free_parts_do_not_import_torch(part):
    for name, path in library_modules().items():
        if part_of(name) == part or name == f"taskgroup.{part}":
            third_party = {m.split(".")[0] for m in imported_modules(path)}
            assert "torch" not in third_party, f"{path} imports torch"


def parse_time_modules() -> list[str]:
    """The library modules the rule files import (what Snakemake loads while parsing)."""
    modules = set()
    for smk in [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))]:
        modules |= set(re.findall(r"^from (taskgroup[\w.]*) import", smk.read_text(), re.M))
        modules |= set(re.findall(r"^import (taskgroup[\w.]*)", smk.read_text(), re.M))
    return sorted(modules)


def test_parsing_the_workflow_loads_no_torch():
    modules = parse_time_modules()
    assert "taskgroup.config" in modules
    code = "; ".join(f"import {m}" for m in modules) + (
        "; import sys; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"parse-time imports {modules} load torch"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_library_files_follow_imports_through_modules_and_packages(tmp_path):
    library = tmp_path / "taskgroup"
    write(library / "__init__.py", "")
    write(library / "a" / "__init__.py", "")
    write(library / "a" / "one.py", "from .two import thing\nimport numpy\n")
    write(library / "a" / "two.py", "def f():\n    from taskgroup.b import three\n")
    write(library / "b" / "__init__.py", "")
    write(library / "b" / "three.py", "x = 1\n")
    write(library / "c.py", "x = 2\n")  # imported by nobody
    script = write(tmp_path / "scripts" / "job.py", "from taskgroup.a.one import thing\n")

    found = [path.relative_to(tmp_path).as_posix() for path in library_files(script, tmp_path)]

    assert found == [
        "taskgroup/__init__.py", "taskgroup/a/__init__.py", "taskgroup/a/one.py",
        "taskgroup/a/two.py", "taskgroup/b/__init__.py", "taskgroup/b/three.py",
    ]
    assert imported_modules(library / "a" / "one.py", "taskgroup.a") == {
        "taskgroup.a.two", "taskgroup.a.two.thing", "numpy",
    }


def test_imported_modules_finds_imports_nested_in_any_statement(tmp_path):
    source = write(tmp_path / "m.py", "\n".join([
        "class C:",
        "    def f(self):",
        "        with open('x') as h:",
        "            import a",
        "try:",
        "    import b",
        "except ImportError:",
        "    import c",
        "else:",
        "    import d",
        "finally:",
        "    import e",
        "for i in range(2):",
        "    pass",
        "else:",
        "    import f",
        "match 1:",
        "    case 1:",
        "        if True:",
        "            import g",
        "x = [i for i in range(3)]",
    ]) + "\n")
    assert imported_modules(source) == set("abcdefg")


def test_library_files_sees_an_edited_file_within_one_process(tmp_path):
    """The parsed imports are cached per file, keyed by its modification time."""
    import os

    write(tmp_path / "taskgroup" / "__init__.py", "")
    write(tmp_path / "taskgroup" / "b.py", "x = 1\n")
    one = write(tmp_path / "taskgroup" / "a.py", "x = 1\n")
    script = write(tmp_path / "job.py", "import taskgroup.a\n")
    names = lambda: [p.name for p in library_files(script, tmp_path)]  # noqa: E731
    assert names() == ["__init__.py", "a.py"]
    one.write_text("import taskgroup.b\n")
    stat = one.stat()
    os.utime(one, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert names() == ["__init__.py", "a.py", "b.py"]


def test_every_workflow_script_is_named_as_its_rule_and_calls_its_stage():
    rules = set()
    for smk in (ROOT / "rules").glob("*.smk"):
        rules |= set(re.findall(r"^\s*(?:rule|checkpoint) (\w+):", smk.read_text(), re.M))
    scripts = {path.stem: path for path in (ROOT / "workflow_scripts").glob("*.py")}
    assert set(scripts) == rules - {"all"}
    for name, path in scripts.items():
        match = re.search(r"^from taskgroup\.stages\.(\w+) import (\w+)$", path.read_text(), re.M)
        assert match and match.group(2) == name, f"{path} should call stage {name}"
        smk = ROOT / "rules" / f"{match.group(1)}.smk"
        assert re.search(rf"^\s*(?:rule|checkpoint) {name}:", smk.read_text(), re.M), (
            f"stage module taskgroup/stages/{match.group(1)}.py holds {name}, "
            f"but rules/{match.group(1)}.smk does not define that rule"
        )
