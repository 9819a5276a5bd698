"""The app's architecture, checked: subscriptions is a plugin (nothing under
subscriptions/ imports newsroom), and only the orchestration queues work
(models never import tasks; nothing but delivery.py does)."""

import ast
from pathlib import Path

import subscriptions

APP_DIR = Path(subscriptions.__file__).resolve().parent
FORBIDDEN = "newsroom"


def imports_of(source, package=None):
    """Every module name an import statement in `source` names, at any
    depth (function-level imports too). With `package` (the dotted name of
    the package `source` is in), relative imports are resolved and
    `from X import a` also names X.a (a may be a submodule)."""
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
            if package:
                names += [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and package:
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1])
            module = f"{base}.{node.module}" if node.module else base
            names.append(module)
            names += [f"{module}.{alias.name}" for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None))
            in ("import_module", "__import__", "import_string")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.append(str(node.args[0].value))
    return names


def forbidden_imports(path):
    return [
        name
        for name in imports_of(path.read_text())
        if name == FORBIDDEN or name.startswith(FORBIDDEN + ".")
    ]


def test_the_checker_catches_every_kind_of_import():
    source = (
        "import newsroom\nimport newsroom.models as m\nfrom newsroom.models import Article\n"
        "from newsroom import models\nimportlib.import_module('newsroom.models')\n"
        "import_string('newsroom.models.Entity')\nimport newsroomish\nfrom . import newsroom\n"
    )
    found = [n for n in imports_of(source) if n == FORBIDDEN or n.startswith(FORBIDDEN + ".")]
    assert found == [
        "newsroom",
        "newsroom.models",
        "newsroom.models",
        "newsroom",
        "newsroom.models",
        "newsroom.models.Entity",
    ]


def test_it_never_imports_newsroom():
    files = sorted(APP_DIR.rglob("*.py"))
    assert len(files) > 10  # The walk really covers the app.
    offenders = {str(p.relative_to(APP_DIR)): forbidden_imports(p) for p in files}
    assert {path: names for path, names in offenders.items() if names} == {}


def test_its_templates_load_nothing_from_newsroom():
    for template in APP_DIR.rglob("*.html"):
        text = template.read_text()
        assert "{% load newsroom" not in text, template
        assert '"newsroom/' not in text, template


def package_of(path):
    return ".".join(("subscriptions", *path.parent.relative_to(APP_DIR).parts))


def importers_of(module):
    """{file: [names]} of the app's files that import `module` or anything in it."""
    found = {}
    for path in sorted(APP_DIR.rglob("*.py")):
        names = [
            n
            for n in imports_of(path.read_text(), package_of(path))
            if n == module or n.startswith(module + ".")
        ]
        if names:
            found[str(path.relative_to(APP_DIR))] = names
    return found


def test_the_checker_resolves_relative_imports():
    source = (
        "from . import tasks\nfrom .tasks import fan_out\nfrom subscriptions import tasks\n"
        "import subscriptions.tasks\nfrom .models import Mailing\nimport subscriptions_extra\n"
        "def f():\n    from .tasks import sweep\n"
    )
    names = imports_of(source, package="subscriptions")
    assert [n for n in names if n.startswith("subscriptions.tasks")] == [
        "subscriptions.tasks",  # from . import tasks
        "subscriptions.tasks",  # from .tasks import fan_out
        "subscriptions.tasks.fan_out",
        "subscriptions.tasks",  # from subscriptions import tasks
        "subscriptions.tasks",  # import subscriptions.tasks
        "subscriptions.tasks",  # in a function
        "subscriptions.tasks.sweep",
    ]
    deep = imports_of("from ...tasks import x", package="subscriptions.management.commands")
    assert "subscriptions.tasks" in deep


def test_models_never_import_tasks():
    """Tables hold state; they never queue work themselves."""
    assert "models.py" not in importers_of("subscriptions.tasks")


def test_only_the_orchestration_imports_tasks():
    """delivery.py alone queues tasks (Celery finds tasks.py by autodiscovery)."""
    assert set(importers_of("subscriptions.tasks")) == {"delivery.py"}
