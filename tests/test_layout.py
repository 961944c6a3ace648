"""The code's layout, checked from its syntax tree: small functions, and commands that only import library modules
(data flows one way: library modules never import a command; a command never imports another)."""
import ast
from pathlib import Path

NMT = Path(__file__).resolve().parents[1] / "nmt"
COMMANDS = {"train", "decode", "study", "visualize", "export"}  # python -m nmt.NAME; nmt.data's fetch is a library
MAX_LINES = 60  # a function past this is split


def module_tree(name: str) -> ast.Module:
    return ast.parse((NMT / f"{name}.py").read_text(), filename=f"nmt/{name}.py")


def imported_nmt_modules(tree: ast.Module) -> set:
    """Every nmt module a file imports, at any depth (function-level imports included)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "nmt":
                out |= {a.name for a in node.names}
            elif node.module.startswith("nmt."):
                out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("nmt.")}
    return out


def long_functions(tree: ast.Module, where: str) -> list:
    return [f"{where}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)" for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > MAX_LINES]


def modules() -> list:
    return sorted(p.stem for p in NMT.glob("*.py") if p.stem != "__init__")


def test_no_function_is_longer_than_sixty_lines():
    found = [f for m in modules() for f in long_functions(module_tree(m), f"nmt/{m}.py")]
    assert found == []


def test_commands_import_only_library_modules_and_library_modules_no_command():
    assert COMMANDS <= set(modules())
    wrong = [f"nmt/{m}.py imports nmt.{i}" for m in modules() for i in sorted(imported_nmt_modules(module_tree(m)))
             if i in COMMANDS and i != m]
    assert wrong == []


def test_the_checks_see_what_they_look_for():
    """The two checks on source made to fail: a 61-line function, and a library module importing a command."""
    body = "\n".join(["def f():"] + ["    x = 1"] * 60)
    assert long_functions(ast.parse(body), "x.py") == ["x.py:1 f (61 lines)"]
    assert imported_nmt_modules(ast.parse("def g():\n    from nmt.train import main\nimport nmt.decode\n"
                                          "from nmt import study")) == {"train", "decode", "study"}
