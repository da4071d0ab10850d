"""The export stage: the LoRA adapter always; merged 16-bit weights and GGUF on request
(through the backend's own saver). The verify-export stage checks them; publish writes their
model cards and uploads."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from .kernel import Context, Stage
from .results import RunResults
from .training import final_adapter, trains


def export_stage(ctx: Context) -> dict[str, Any]:
    recipe, adapter = ctx.recipe, final_adapter(ctx.run.dir, ctx.recipe)
    done: dict[str, Any] = {}
    target = ctx.path("adapter")
    ctx.run.remove_written(ctx.stage.name)  # an earlier export's files (a failed verification exports again)
    shutil.copytree(adapter, target, dirs_exist_ok=True)
    done["adapter"] = str(target)
    if recipe.export.merged:
        done["merged"] = str(ctx.backend.merge(adapter, ctx.path("merged")))
    if recipe.export.gguf:
        done["gguf"] = str(ctx.backend.gguf(adapter, ctx.path("gguf"), recipe.export.gguf))
    return done


def _read_exports(run_dir: Path, record: dict[str, Any] | None, out: RunResults) -> None:
    out.exports = {k: v for k, v in (record or {}).items() if k != "seconds" and isinstance(v, str)}


EXPORT = Stage("export", "the LoRA adapter (and merged weights, GGUF when the recipe asks)", export_stage,
               writes=("export/adapter/**", "export/merged/**", "export/gguf/**"), enabled=trains, reads=("export",),
               results=_read_exports)
