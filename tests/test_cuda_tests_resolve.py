"""CUDA-only tests are skipped on this CPU machine, so an import or a name that cannot resolve inside one hides
until a GPU session runs it (the first CUDA test imported a helper conftest never defined). Every CUDA-only
test's module is imported here, and every name its body reads must be a parameter, a local, a builtin or a name
that module defines: then skipping the test can hide nothing but what needs the GPU itself."""

from __future__ import annotations

import ast
import builtins
import importlib
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def _needs_cuda(func: ast.FunctionDef) -> bool:
    return any("cuda" in ast.unparse(d) for d in func.decorator_list)


def cuda_tests() -> list[tuple[str, ast.FunctionDef]]:
    found = []
    for path in sorted(TESTS.glob("test_*.py")):
        tree = ast.parse(path.read_text())
        found += [(path.stem, node) for node in tree.body
                  if isinstance(node, ast.FunctionDef) and node.name.startswith("test_") and _needs_cuda(node)]
    return found


def unresolved(module_name: str, func: ast.FunctionDef) -> list[str]:
    """Names ``func`` reads that nothing defines: not a parameter, local, builtin or module global."""
    module = importlib.import_module(module_name)
    bound = {a.arg for a in func.args.args + func.args.kwonlyargs}
    reads = set()
    for node in ast.walk(func):
        if isinstance(node, ast.Name):
            (bound.add if isinstance(node.ctx, (ast.Store, ast.Del)) else reads.add)(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            return [f"an import inside the test (line {node.lineno}): import at module level instead"]
        elif isinstance(node, (ast.FunctionDef, ast.Lambda, ast.comprehension, ast.ExceptHandler)):
            args = getattr(node, "args", None)
            bound.update(a.arg for a in getattr(args, "args", []))
            if isinstance(node, ast.ExceptHandler) and node.name:
                bound.add(node.name)
    return sorted(n for n in reads - bound if not hasattr(builtins, n) and not hasattr(module, n))


def test_there_are_cuda_tests_to_check():
    assert any(name == "test_cuda_amp_step_of_a_resnet50_bank_is_finite" for _, name in
               [(m, f.name) for m, f in cuda_tests()])


@pytest.mark.parametrize("module_name, func", cuda_tests(), ids=lambda v: getattr(v, "name", v))
def test_every_name_a_cuda_test_uses_resolves_without_a_gpu(module_name, func):
    assert unresolved(module_name, func) == []


def test_the_check_finds_what_would_fail_on_the_gpu():
    bad = ast.parse("def test_x(tmp_path):\n    y = helper_nobody_defined(tmp_path)\n").body[0]
    assert unresolved("test_cuda_tests_resolve", bad) == ["helper_nobody_defined"]
    lazy = ast.parse("def test_x():\n    from conftest import make_photo_domains\n").body[0]
    assert "an import inside the test" in unresolved("test_cuda_tests_resolve", lazy)[0]
