"""Does the GPU install resolve? pip's own resolver, on `.[train,unsloth,vllm]` with
constraints-gpu.txt, for the Python and platform of a Colab or Linux GPU machine (3.12,
manylinux x86-64), reading package metadata only (no wheel is downloaded): every pinned
package must come out at its pin. Run by scripts/dev.sh test (CI); about 30 s with network.

    python scripts/check_gpu_stack.py
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints-gpu.txt"
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in range(5, 40)] + ["manylinux2014_x86_64", "manylinux1_x86_64"]


def pins() -> dict[str, str]:
    out = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            out[re.sub(r"[-_.]+", "-", name).lower()] = version
    return out


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report",
                   str(report), "--target", str(Path(tmp) / "t"), "--python-version", "3.12", "--implementation", "cp",
                   "--only-binary=:all:", *[x for p in PLATFORMS for x in ("--platform", p)], "-c", str(CONSTRAINTS),
                   f"{ROOT}[train,unsloth,vllm]"]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
            print(f"the GPU stack does not resolve: {(errors or done.stderr.strip().splitlines() or ['?'])[-1]}")
            return 1
        got = {re.sub(r"[-_.]+", "-", i["metadata"]["name"]).lower(): i["metadata"]["version"]
               for i in json.loads(report.read_text())["install"]}
    wrong = {name: got.get(name) for name, version in pins().items() if got.get(name) != version}
    if wrong:
        print(f"the GPU stack resolves, but not to its pins: {wrong}")
        return 1
    print(f"the GPU stack resolves ({len(got)} packages): " + ", ".join(f"{n} {v}" for n, v in pins().items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
