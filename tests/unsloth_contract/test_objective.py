"""One GRPO objective on both backends, against the real UnslothGRPOConfig of the pinned Unsloth.

On a GPU, importing Unsloth replaces TRL's GRPOConfig with its own subclass, whose defaults and
``__init__`` differ (an explicit dapo loss turns on truncated-completion masking and
epsilon_high 0.28, importance-sampling correction defaults off, batch size, optimizer and more).
``UNSLOTH_ALLOW_CPU=1`` skips that replacement, so here it is built the way Unsloth builds it
(``unsloth.models.rl._patch_trl_rl_trainers_impl``, what ``PatchFastRL`` calls on a GPU): the
real generated class, on a CPU. Every shipped recipe's GRPO (and SFT) config must then come out
the same from TRL's class and from Unsloth's, except the settings aha leaves to Unsloth because they
change speed, never what is trained (``PERFORMANCE_ONLY``).

Also the TRL Unsloth allows (1.15): every recipe loads and builds its configs against it."""

import dataclasses
from pathlib import Path

import pytest

pytest.importorskip("unsloth", reason="the Unsloth contract runs in its own venv (scripts/dev.sh)")

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml"))


@pytest.fixture(scope="module")
def classes():
    """(TRL's GRPOConfig, Unsloth's) and the same for SFT."""
    import trl
    from unsloth.models.rl import _patch_trl_rl_trainers_impl

    pristine = {"grpo": trl.GRPOConfig, "sft": trl.SFTConfig}
    for trainer in ("grpo_trainer", "sft_trainer"):
        _patch_trl_rl_trainers_impl(trainer)
    patched = {"grpo": trl.GRPOConfig, "sft": trl.SFTConfig}
    assert all(patched[s] is not pristine[s] and issubclass(patched[s], pristine[s]) for s in pristine), \
        "Unsloth no longer replaces TRL's configs: this contract has nothing to check"
    return pristine, patched


# Values Unsloth's configs resolve from None in __init__ whatever is passed; neither changes what is optimised.
RESOLVED_BY_UNSLOTH = {"dataset_num_proc": "SFT's preprocessing workers",
                       "gradient_checkpointing_kwargs": "how activations are recomputed (use_reentrant)"}


def _fields(config, cls) -> dict:
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(cls) if f.init and f.name != "output_dir"}


def _recipe(path, tmp_path):
    from aha.recipes.api import load_recipe
    from aha.recipes.training.models import build_tiny_qwen3

    model = tmp_path / "model"
    if not model.is_dir():
        build_tiny_qwen3(model)
    return load_recipe(str(path), overrides={"model.name": str(model), "model.backend": "hf", "export.gguf": None})


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_each_recipe_trains_one_objective_on_trl_and_unsloth(path, classes, tmp_path):
    from aha.recipes.config.trl_args import PERFORMANCE_ONLY, pristine_class, trl_values

    pristine, patched = classes
    recipe = _recipe(path, tmp_path)
    for stage in ("sft", "grpo"):
        assert pristine_class(stage) is pristine[stage]  # TRL's own defaults, read through Unsloth's subclass
        values = {**trl_values(recipe, stage), "output_dir": str(tmp_path / stage)}
        ours, theirs = pristine[stage](**values), patched[stage](**values)
        a, b = _fields(ours, pristine[stage]), _fields(theirs, pristine[stage])
        differ = {k: (a[k], b[k]) for k in a if a[k] != b[k] and k not in RESOLVED_BY_UNSLOTH and k not in PERFORMANCE_ONLY}
        assert not differ, f"{path.stem} {stage}: TRL and Unsloth build different configs: {differ}"
        assert getattr(recipe, stage).args.__class__ is patched[stage]  # validation built the installed class


def test_without_aha_the_two_configs_differ(classes, tmp_path):
    """The contract can fail: an explicit dapo loss, the rest left to each class, trains
    another objective on Unsloth (what aha's explicit values prevent)."""
    pristine, patched = classes
    values = {"output_dir": str(tmp_path), "loss_type": "dapo", "use_cpu": True, "bf16": False}
    ours, theirs = pristine["grpo"](**values), patched["grpo"](**values)
    assert (ours.mask_truncated_completions, theirs.mask_truncated_completions) == (False, True)
    assert ours.epsilon_high in (None, 0.2) and theirs.epsilon_high == 0.28  # TRL: None means epsilon (0.2)
    assert (ours.vllm_importance_sampling_correction, theirs.vllm_importance_sampling_correction) == (True, False)
