"""GRPO's wiring moves the policy, the preflight finds what makes GRPO learn nothing, and
the run's warnings fire when they should (and only then)."""

import json
import math
from types import SimpleNamespace

import pytest

from aha.formats import get_format
from aha.recipes.config.load import recipe_from_dict
from aha.recipes.config.schema import RecipeError
from aha.recipes.training.preflight import (
    advantage_shares, analyse, check_verdicts, prompts_needed, score_group, selected_rows, verdicts,
)
from aha.recipes.stages.evidence import moving_average, reward_curves
from aha.recipes.training.trainers import PassRateLogged, RewardWatch
from aha.rewards import get_reward

FMT = get_format("unsloth")
RIGHT = "2 + 2 = 4<end_working_out><SOLUTION>4</SOLUTION>"
WRONG = "2 + 2 = 5<end_working_out><SOLUTION>5</SOLUTION>"
OFF_FORMAT = "2 + 2 is 4, I think"
TRUNCATED = "2 + 2 is, let me see, well"


def _recipe(**grpo):
    return recipe_from_dict({"model": {"name": "builtin:tiny-qwen3"}, "grpo": {"num_generations": 4, **grpo}})


def _rewards(recipe):
    funcs = [get_reward(s.name, format=FMT) for s in recipe.grpo.rewards]
    return funcs, [s.weight for s in recipe.grpo.rewards]


def _group(funcs, weights, texts, truncated=None, answer="4"):
    truncated = truncated or [False] * len(texts)
    return score_group(funcs, weights, FMT, {"prompt": "p", "answer": answer, "id": answer + str(len(texts))},
                       texts, truncated, [len(t) // 3 for t in texts])


# ----- the preflight's statistics and verdicts ------------------------------------------------------------------
def test_preflight_statistics_on_hand_made_groups():
    recipe = _recipe()
    funcs, weights = _rewards(recipe)
    groups = [_group(funcs, weights, [RIGHT, WRONG, RIGHT, WRONG]),      # learnable
              _group(funcs, weights, [RIGHT] * 4),                       # always right: no signal
              _group(funcs, weights, [OFF_FORMAT, WRONG, WRONG, WRONG])]  # never right, but format varies
    stats = analyse(groups, funcs, weights, max_len=64)
    assert (stats["never_right"], stats["mixed"], stats["always_right"]) == (1, 1, 1)
    assert stats["pass@1"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert stats["pass@4"] == pytest.approx(2 / 3)
    assert stats["flat_group_share"] == pytest.approx(1 / 3)
    assert stats["format_rate"] == pytest.approx(11 / 12)
    assert stats["pass_rate_histogram"] == [1, 0, 1, 0, 1]
    shares = stats["advantage_share"]
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-3)
    # Right vs wrong differ only in the answer layers; the off-format completion differs in format layers too.
    assert shares["check_answer_numeric"] > shares["format_exact"] > 0
    assert stats["layers"]["format_exact"]["max"] == 3.0 and stats["layers"]["format_exact"]["min"] == 0.0


def test_advantage_shares_sum_to_one_on_random_groups():
    import random

    rng = random.Random(0)
    groups = [{"layers": {"a": [rng.choice([0.0, 3.0]) for _ in range(8)], "b": [rng.gauss(0, 1) for _ in range(8)]}}
              for _ in range(20)]
    shares = advantage_shares(groups, ["a", "b"], [1.0, 0.5])
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-3)
    flat = [{"layers": {"a": [1.0] * 4, "b": [2.0] * 4}}]
    assert advantage_shares(flat, ["a", "b"], [1.0, 1.0]) is None  # no signal at all


def _codes(found, level=None):
    return {v["code"] for v in found if level is None or v["level"] == level}


def test_verdict_truncation_names_the_length_to_set():
    recipe = _recipe(max_completion_length=48)
    funcs, weights = _rewards(recipe)
    groups = [_group(funcs, weights, [TRUNCATED, TRUNCATED, TRUNCATED, RIGHT], truncated=[True, True, True, False])]
    groups[0]["lengths"] = [48, 48, 48, 71]
    found = verdicts(analyse(groups, funcs, weights, max_len=48), recipe, FMT)
    message = next(v["message"] for v in found if v["code"] == "truncated")
    assert "75% of completions stop at 48 tokens" in message and "up to 71" in message
    assert "grpo.max_completion_length >= 80" in message
    assert "truncated" in _codes(found, "fatal")


def test_verdict_truncated_loops_does_not_ask_for_a_longer_limit():
    """Completions cut off because they go round in circles: a longer limit would not finish
    them, so the preflight says so instead of naming a length."""
    recipe = _recipe(max_completion_length=48)
    funcs, weights = _rewards(recipe)
    loop = "Compute step by step: 63 - 35 = 28. 63 - 35 = 28. 63 - 35 = 28. 63 - 35 = 28. 63 - 35"
    groups = [_group(funcs, weights, [loop, loop, loop, RIGHT], truncated=[True, True, True, False])]
    found = verdicts(analyse(groups, funcs, weights, max_len=48), recipe, FMT)
    message = next(v["message"] for v in found if v["code"] == "truncated-loops")
    assert "100% of those repeat themselves" in message and "max_completion_length >=" not in message
    assert "truncated" not in _codes(found) and not _codes(found, "fatal")


def test_findings_the_recipe_accepts_are_reported_with_its_reason_and_stop_nothing(tmp_path):
    from aha.recipes.training.preflight import accept

    found = [{"level": "fatal", "code": "flat", "message": "90% of groups have equal rewards"},
             {"level": "info", "code": "headroom", "message": "pass@1 0.2"}]
    kept = accept(found, {"flat": "a random model: this recipe proves the plumbing"})
    assert kept[0]["level"] == "accepted" and kept[0]["message"].endswith(
        "(accepted by the recipe: a random model: this recipe proves the plumbing)")
    assert kept[1] == found[1]
    check_verdicts({"verdicts": kept}, "stop", tmp_path)  # nothing fatal is left
    with pytest.raises(RecipeError, match="grpo.preflight_accept key must be one of"):
        _recipe(preflight_accept={"flatt": "typo"})


def test_verdict_flat_groups_says_too_easy_or_too_hard():
    recipe = _recipe()
    funcs, weights = _rewards(recipe)
    easy = verdicts(analyse([_group(funcs, weights, [RIGHT] * 4) for _ in range(5)], funcs, weights, 64), recipe, FMT)
    assert "too easy" in next(v["message"] for v in easy if v["code"] == "flat")
    assert {"flat", "no-learnable"} <= _codes(easy, "fatal")
    hard = verdicts(analyse([_group(funcs, weights, [WRONG] * 4) for _ in range(5)], funcs, weights, 64), recipe, FMT)
    assert "too hard" in next(v["message"] for v in hard if v["code"] == "flat")
    healthy = verdicts(analyse([_group(funcs, weights, [RIGHT, WRONG, WRONG, RIGHT])] * 5, funcs, weights, 64),
                       recipe, FMT)
    assert not _codes(healthy, "fatal") and not _codes(healthy, "warn")


def test_verdict_format_never_fires_and_names_the_prefill():
    recipe = _recipe()
    funcs, weights = _rewards(recipe)
    # The model writes the tag the prompt already pre-fills: the format can never match.
    again = "<start_working_out>2 + 2 = 4 <SOLUTION>4</SOLUTION>"
    groups = [_group(funcs, weights, [again, again.replace("4", "5"), again, again]) for _ in range(3)]
    found = verdicts(analyse(groups, funcs, weights, 64), recipe, FMT)
    message = next(v["message"] for v in found if v["code"] == "format-constant")
    assert message.startswith("format_exact is 0 on every completion")
    assert "pre-fills '<start_working_out>'" in message and "write it again" in message


def test_verdict_answer_drowned_by_format_rewards():
    recipe = _recipe(rewards=[{"name": "format_exact", "weight": 10.0}, {"name": "check_answer_numeric", "weight": 0.1}])
    funcs, weights = _rewards(recipe)
    groups = [_group(funcs, weights, [RIGHT, OFF_FORMAT, WRONG, RIGHT]) for _ in range(4)]
    found = verdicts(analyse(groups, funcs, weights, 64), recipe, FMT)
    assert "answer-drowned" in _codes(found, "warn")


def test_fatal_verdict_stops_unless_warn(tmp_path):
    report = {"verdicts": [{"level": "fatal", "code": "flat", "message": "90% of groups have equal rewards"}]}
    with pytest.raises(RecipeError, match="preflight: 90% of groups have equal rewards"):
        check_verdicts(report, "stop", tmp_path)
    check_verdicts(report, "warn", tmp_path)  # reported, not fatal


def test_reward_kinds_are_declared_not_guessed_from_names(tmp_path):
    from aha.rewards import KINDS, LAYERS, UserReward, get_reward, reward_kind
    from aha.rewards.layers import Layer
    from aha.formats import InputError

    assert {name: layer.kind for name, layer in LAYERS.items() if layer.kind != "answer"} == {
        "format_exact": "format", "format_approximate": "format", "xml_count": "format", "xml_strict_format": "format",
        "xml_soft_format": "format", "length_penalty": "penalty", "truncation_penalty": "penalty",
        "repetition_penalty": "penalty"}
    assert reward_kind("match_format_exactly") == "format" and reward_kind("correctness_reward_func") == "answer"
    assert reward_kind(get_reward("strict_format_reward_func", format="xml", mode="faithful")) == "format"
    # A function's name says nothing: one named like a format layer that declares nothing is "other", and one that
    # declares "format" is watched as a format reward under any name.
    (tmp_path / "mine.py").write_text("def format_like(completions, **kw):\n    return [0.0] * len(completions)\n"
                                      "def layout(completions, **kw):\n    return [0.0] * len(completions)\n"
                                      "layout.kind = 'format'\n"
                                      "def odd(completions, **kw):\n    return [0.0] * len(completions)\n"
                                      "odd.kind = 'style'\n")
    assert reward_kind(UserReward(f"{tmp_path / 'mine.py'}:format_like")) == "other"
    layout = UserReward(f"{tmp_path / 'mine.py'}:layout")
    assert reward_kind(layout) == "format"
    with pytest.raises(InputError, match="kind attribute must be one of format, answer, penalty, other, not 'style'"):
        UserReward(f"{tmp_path / 'mine.py'}:odd")
    with pytest.raises(ValueError, match="kind must be one of"):
        Layer(lambda completions, **kw: [], kind="style")
    assert set(KINDS) >= {layer.kind for layer in LAYERS.values()}
    recipe = recipe_from_dict({"model": {"name": "builtin:tiny-qwen3"}})
    watch = RewardWatch(recipe, [layout, get_reward("check_number"), "xml_count"], 16)
    assert watch.format_names == ["layout", "xml_count"]
    groups = [_group([layout], [1.0], [RIGHT, WRONG]) for _ in range(2)]
    assert analyse(groups, [layout], [1.0], 64)["layers"]["layout"]["kind"] == "format"


def test_prompts_needed():
    assert prompts_needed(_recipe(max_steps=25, per_device_train_batch_size=16, num_generations=8)) == 50
    assert prompts_needed(_recipe(max_steps=-1)) == 0  # trains by epochs: every prompt


def test_selected_rows(tmp_path):
    rows = [{"id": str(i), "prompt": "p", "answer": "1"} for i in range(5)]
    assert selected_rows(rows, None) == rows
    with pytest.raises(RecipeError, match="left no"):
        selected_rows(rows, tmp_path)
    (tmp_path / "selected.json").write_text(json.dumps(["1", "3"]))
    assert [r["id"] for r in selected_rows(rows, tmp_path)] == ["1", "3"]
    (tmp_path / "selected.json").write_text("[]")
    with pytest.raises(RecipeError, match="kept no prompt"):
        selected_rows(rows, tmp_path)


def test_recipe_keys_are_checked():
    with pytest.raises(RecipeError, match="grpo.select must be one of"):
        _recipe(select="some")
    with pytest.raises(RecipeError, match="needs the preflight"):
        _recipe(select="learnable", preflight="off")
    with pytest.raises(RecipeError, match="grpo.preflight must be one of"):
        _recipe(preflight="maybe")


# ----- the run's warnings --------------------------------------------------------------------------------------
def _watch(**grpo):
    recipe = _recipe(**grpo)
    return RewardWatch(recipe, ["format_exact", "check_answer_numeric"], max_completion_length=48)


def _feed(watch, rows):
    for step, logs in enumerate(rows, 1):
        watch.on_log(None, SimpleNamespace(global_step=step), None, logs=logs)
    return [w.split(":")[0] for w in watch.warned]


HEALTHY = {"completions/clipped_ratio": 0.05, "frac_reward_zero_std": 0.25, "rewards/format_exact/mean": 1.5,
           "rewards/check_answer_numeric/mean": 0.3}


def test_reward_watch_quiet_on_a_healthy_run():
    assert _feed(_watch(), [HEALTHY] * 15) == []


def test_reward_watch_truncation_fires_once():
    rows = [HEALTHY, {**HEALTHY, "completions/clipped_ratio": 0.56}, {**HEALTHY, "completions/clipped_ratio": 0.9}]
    assert _feed(_watch(), rows) == ["truncated"]


def test_reward_watch_flat_groups():
    assert _feed(_watch(), [HEALTHY, {**HEALTHY, "frac_reward_zero_std": 1.0}]) == ["flat"]


def test_reward_watch_format_reward_never_rising():
    stuck = {**HEALTHY, "rewards/format_exact/mean": 0.0}
    assert _feed(_watch(warn_format_after_steps=5), [stuck] * 4) == []  # not yet: too early to tell
    assert _feed(_watch(warn_format_after_steps=5), [stuck] * 6) == ["format-format_exact"]
    rising = [{**stuck, "rewards/format_exact/mean": 0.2 * i} for i in range(8)]
    assert _feed(_watch(warn_format_after_steps=5), rising) == []


def test_pass_rate_is_logged_through_trl_log_metric_as_the_evals_strict_verdict():
    from aha.eval import grade

    reward = get_reward("check_answer_numeric", format=FMT)
    logged = PassRateLogged(reward, FMT)
    texts = [RIGHT, WRONG, OFF_FORMAT, "4", TRUNCATED, RIGHT.replace("4</", r"\boxed{4}</"), RIGHT + "<|im_end|>"]
    metrics = []
    scores = logged(texts, answer=["4"] * len(texts), log_metric=lambda name, value: metrics.append((name, value)))
    assert scores == reward(texts, answer=["4"] * len(texts)) and logged.__name__ == reward.__name__
    strict = [grade(t, "4", FMT)["strict"] for t in texts]
    assert metrics == [("answer_pass", sum(strict) / len(texts))]
    logged([RIGHT, WRONG], answer=["4", "4"], log_metric=lambda name, value: metrics.append((name, value)))
    assert metrics[-1] == ("answer_pass", 0.5)


# ----- the report's curves -------------------------------------------------------------------------------------
def test_reward_curves_draw_a_moving_average(tmp_path):
    history = [{"step": i, "reward": (13 if i % 2 else -3), "rewards/format_exact/mean": 1.0 + 0.01 * i,
                "answer_pass": 0.4 + 0.01 * i} for i in range(1, 21)]
    assert reward_curves(history, tmp_path / "c.png") and (tmp_path / "c.png").stat().st_size > 1000
    smooth = moving_average([h["reward"] for h in history], 4)
    assert max(smooth[3:]) - min(smooth[3:]) <= 4  # the -3 .. 13 swing averages out to 5 +- 3
    assert not reward_curves([{"step": 1, "loss": 0.0}], tmp_path / "none.png")


# ----- GRPO moves the policy the way its reward points (slow: real TRL training) --------------------------------
def _first_token_even(sign):
    def reward(completions, completion_ids=None, **_):
        return [sign * float(ids[0] % 2 == 0) if ids else 0.0 for ids in completion_ids]
    reward.__name__ = "first_token_even"
    return reward


def _even_mass(model, tokenizer, prompts, temperature):
    """Probability, at GRPO's temperature, that the first sampled token has an even id."""
    import torch

    model.eval()
    masses = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            probs = torch.softmax(model(**ids).logits[0, -1] / temperature, -1)
        masses.append(probs[0::2].sum().item())
    return sum(masses) / len(masses)


@pytest.mark.slow
@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["reward", "penalty"])
def test_grpo_moves_the_policy_towards_its_reward(tmp_path, tiny_qwen3, sign):
    """A reward the tiny model can learn at once (the first token's id is even): GRPO must
    raise it, and its negative must lower it. This fails if rewards reach the wrong
    completions, advantages have the wrong sign, or the adapter being trained is not the
    one generating. Low temperature makes the random model's first token a choice among a
    few candidates, so the reward varies within groups."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from aha.recipes.training.models import load_for_training, lora_config
    from aha.recipes.training.trainers import grpo_trainer, train_and_save

    torch.manual_seed(0)
    temperature = 0.03
    recipe = recipe_from_dict({
        "model": {"name": str(tiny_qwen3), "dtype": "float32"}, "lora": {"r": 8, "alpha": 16},
        "grpo": {"learning_rate": 3e-2, "max_steps": 10, "num_generations": 8, "per_device_train_batch_size": 16,
                 "max_completion_length": 4, "temperature": temperature, "top_p": 1.0, "min_p": 0.0,
                 "loss_type": "dapo", "beta": 0.0, "logging_steps": 1, "save_strategy": "no",
                 "gradient_checkpointing": False}})
    model, tokenizer = load_for_training(str(tiny_qwen3), recipe.model)
    prompts = ["What is 2 + 2?", "Name a colour."]
    rows = [{"prompt": p, "answer": "4", "id": str(i)} for i, p in enumerate(prompts)] * 8
    before = _even_mass(AutoModelForCausalLM.from_pretrained(tiny_qwen3), tokenizer, prompts, temperature)
    trainer, _ = grpo_trainer(recipe, model, tokenizer, FMT, rows, 4, tmp_path, peft_config=lora_config(recipe),
                              rewards=([_first_token_even(sign)], [1.0]))
    train_and_save(trainer, tmp_path)
    logged = [r["rewards/first_token_even/mean"] for r in trainer.state.log_history
              if "rewards/first_token_even/mean" in r]
    assert len(logged) == 10 and all(not math.isnan(x) for x in logged)
    # The saved adapter is the trained policy: reload it from disk and measure.
    after = _even_mass(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_qwen3),
                                                 tmp_path / "adapter"), tokenizer, prompts, temperature)
    late = sum(logged[-3:]) / 3
    if sign > 0:
        assert after > max(0.95, before + 0.2) and late > logged[0]
    else:
        assert after < min(0.05, before - 0.2) and late > logged[0]  # less negative: fewer even first tokens


# ----- `aha preflight` on its own --------------------------------------------------------------------------------
@pytest.mark.slow
def test_preflight_command(tmp_path, tiny_adapter, capsys):
    from aha.recipes.cli import main

    out = tmp_path / "pre"
    args = ["preflight", "tiny-qwen3-smoke", "--out", str(out), "--set", "grpo.preflight_prompts=3"]
    # The smoke recipe says preflight: warn, so its findings are printed and the command succeeds.
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "pass@1 / pass@4" in printed and "groups with equal rewards" in printed
    report = json.loads((out / "preflight.json").read_text())
    assert report["stats"]["prompts"] == 3 and len(report["per_prompt"]) == 3
    # With preflight: stop, a fatal finding is one error line and exit code 2; the report is still written.
    assert main(args + ["--set", "grpo.preflight=stop", "--adapter", str(tiny_adapter)]) == 2
    err = capsys.readouterr().err.strip()  # the run's log lines, then the one error line
    assert err.splitlines()[-1].startswith("aha: error: preflight:") and "Traceback" not in err
    assert main(["preflight", "tiny-qwen3-smoke", "--adapter", str(tmp_path)]) == 2
    assert "not a LoRA adapter folder" in capsys.readouterr().err


def _emitted_codes(source: str) -> set[str]:
    """Every finding code a module's source can emit: ``say(level, "code", ...)`` calls and
    ``{"code": "..."}`` literals."""
    import ast

    codes = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "say" and len(node.args) >= 2 \
                and isinstance(node.args[1], ast.Constant):
            codes.add(node.args[1].value)
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == "code" and isinstance(value, ast.Constant):
                    codes.add(value.value)
    return codes


def test_every_finding_code_the_preflight_can_emit_is_declared():
    """grpo.preflight_accept may name only declared codes, so a finding the preflight emits under an undeclared
    code could never be accepted: the declared list and the emitted codes are the same set. A planted finding
    with a new code is caught."""
    import inspect

    from aha.recipes.config.schema import VERDICT_CODES
    from aha.recipes.training import preflight

    source = inspect.getsource(preflight)
    assert _emitted_codes(source) == set(VERDICT_CODES)
    planted = source.replace('say("info", "headroom"', 'say("warn", "brand-new", "x")\n    say("info", "headroom"')
    assert _emitted_codes(planted) - set(VERDICT_CODES) == {"brand-new"}
