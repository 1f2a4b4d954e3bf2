"""Throughput of the continuous-control scripts against their own environment stack.

In one process, for one task, it measures side by side, in `--repeats` interleaved rounds:
  env-only  steps/s of the scripts' exact vector env + wrapper stack driven by random actions,
            measured before and after the training runs of the round (mean of both);
  ppo       steps/s of `ppo_baseline.py`, from its logged rollout and update times;
  r2vpo     the same for `r2vpo_continuous.py`.
Within a round each script runs twice, in the order A B B A (A B C C B A with --baseline-dir),
and its two timings are averaged, so a drift of the machine's speed during the round cancels.
Each training measurement runs the script's own main() for `--warmup-iterations` +
`--iterations` iterations and keeps only the iterations after the warm-up. Training steps/s is
num_steps / (rollout time + update time) per iteration, i.e. the whole loop except logging.
Ratios (training / env-only, r2vpo / ppo) are computed within each round and reported as the
median over rounds with their range.

    python -m benchmark.speed --env-id Hopper-v5
    git worktree add /tmp/old f7cca37 && python -m benchmark.speed --baseline-dir /tmp/old   # speed-up over it
    python -m benchmark.speed --actor-cost   # the per-step cost of the torch and the NumPy actor
"""

import glob
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Args:
    env_id: str = "Hopper-v5"
    """the task to measure"""
    iterations: int = 3
    """timed iterations per training measurement"""
    num_steps: int = 2048
    """environment steps per iteration (the scripts' default)"""
    warmup_iterations: int = 1
    """iterations run first and not timed"""
    env_steps: int = 10000
    """random-action steps per environment-only measurement"""
    repeats: int = 3
    """interleaved rounds; the table reports the median"""
    torch_threads: int = 1
    """torch threads, as in the scripts' default"""
    scripts_dir: str = str(ROOT)
    """folder holding the two scripts (another checkout, to compare versions side by side)"""
    baseline_dir: str | None = None
    """another checkout (e.g. an older version) whose ppo_baseline.py is measured in the same rounds"""
    actor_cost: bool = False
    """instead: time only the choice of each action inside the env loop, torch actor against Agent.numpy_actor"""


def load_script(folder, name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(folder, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def env_only_steps_per_second(make_vector_env, env_id, num_steps, seed):
    envs = make_vector_env(env_id, 1, False, "speed", gamma=0.99)
    envs.reset(seed=seed)
    envs.action_space.seed(seed)
    start = time.perf_counter()
    for _ in range(num_steps):
        envs.step(envs.action_space.sample())
    elapsed = time.perf_counter() - start
    envs.close()
    return num_steps / elapsed


def actor_step_costs(module, env_id, num_steps, seed):
    """Microseconds per step spent choosing the action, timed inside an environment loop (where
    the physics runs between two calls), for the torch actor (inference mode, one forward and one
    sample, as the scripts did before) and for the scripts' Agent.numpy_actor()."""
    envs = module.make_vector_env(env_id, 1, False, "speed", gamma=0.99)
    agent = module.Agent(envs.single_observation_space.shape[0], envs.single_action_space.shape[0])
    sample_action, rng = agent.numpy_actor(), np.random.default_rng(seed)

    def torch_action(obs):
        with torch.inference_mode():
            action_mean = agent.actor_mean(torch.from_numpy(obs))
            return (action_mean + agent.actor_logstd.exp() * torch.randn_like(action_mean)).numpy()

    costs = {}
    for name, act in (("torch", torch_action), ("numpy", lambda obs: sample_action(obs, rng))):
        obs, _ = envs.reset(seed=seed)
        spent = 0.0
        for _ in range(num_steps):
            start = time.perf_counter()
            action = act(obs)
            spent += time.perf_counter() - start
            obs, *_ = envs.step(action)
        costs[name] = spent / num_steps * 1e6
    envs.close()
    return costs


def training_timings(module, env_id, num_steps, iterations, warmup_iterations, torch_threads, seed):
    """Run module.main() in a scratch folder; return (steps/s, rollout s/iter, update s/iter)."""
    argv = [
        module.__file__,
        "--env-id",
        env_id,
        "--seed",
        str(seed),
        "--num-steps",
        str(num_steps),
        "--total-timesteps",
        str(num_steps * (iterations + warmup_iterations)),
        "--torch-threads",
        str(torch_threads),
        "--num-minibatches",
        str(min(32, num_steps)),
    ]
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)
        saved_argv, sys.argv = sys.argv, argv
        saved_stdout, sys.stdout = sys.stdout, open(os.devnull, "w")  # silence per-episode prints
        try:
            module.main()
        finally:
            sys.stdout.close()
            sys.argv, sys.stdout = saved_argv, saved_stdout
            os.chdir(cwd)
        (event_file,) = glob.glob(os.path.join(scratch, "runs", "*", "events.out.tfevents.*"))
        accumulator = EventAccumulator(event_file, size_guidance={"scalars": 0})
        accumulator.Reload()
        rollout = [e.value for e in accumulator.Scalars("charts/rollout_time")][warmup_iterations:]
        update = [e.value for e in accumulator.Scalars("charts/update_time")][warmup_iterations:]
    iteration_time = np.mean(rollout) + np.mean(update)
    return num_steps / iteration_time, float(np.mean(rollout)), float(np.mean(update))


def main():
    args = tyro.cli(Args)
    torch.set_num_threads(args.torch_threads)
    ppo_baseline, r2vpo_continuous = (
        load_script(args.scripts_dir, name) for name in ("ppo_baseline", "r2vpo_continuous")
    )
    if args.actor_cost:
        rounds = [actor_step_costs(ppo_baseline, args.env_id, args.num_steps, repeat) for repeat in range(args.repeats)]
        costs = {name: statistics.median(costs[name] for costs in rounds) for name in ("torch", "numpy")}
        print(
            f"{args.env_id}, choosing an action inside the env loop, median of {args.repeats} rounds of "
            f"{args.num_steps} steps: torch actor {costs['torch']:.0f} us/step, numpy actor {costs['numpy']:.0f} us/step"
        )
        return
    rounds = {"env-only": [], "ppo": [], "r2vpo": []}
    scripts = [("ppo", ppo_baseline), ("r2vpo", r2vpo_continuous)]
    if args.baseline_dir:
        rounds["ppo (baseline)"] = []
        scripts.append(("ppo (baseline)", load_script(args.baseline_dir, "ppo_baseline")))
    for repeat in range(args.repeats):
        env_before = env_only_steps_per_second(ppo_baseline.make_vector_env, args.env_id, args.env_steps, repeat)
        shift = repeat % len(scripts)  # rotate the order from round to round
        order = scripts[shift:] + scripts[:shift]
        pairs = {name: [] for name, _ in scripts}
        for name, module in order + order[::-1]:  # A B C C B A: a drift linear in time cancels in each pair
            pairs[name].append(
                training_timings(
                    module,
                    args.env_id,
                    args.num_steps,
                    args.iterations,
                    args.warmup_iterations,
                    args.torch_threads,
                    repeat,
                )
            )
        for name, pair in pairs.items():
            rollout, update = (float(np.mean([timings[i] for timings in pair])) for i in (1, 2))
            rounds[name].append((args.num_steps / (rollout + update), rollout, update))
        env_after = env_only_steps_per_second(ppo_baseline.make_vector_env, args.env_id, args.env_steps, repeat)
        rounds["env-only"].append(((env_before + env_after) / 2, np.nan, np.nan))  # brackets the training runs
        print(
            f"round {repeat + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1][0]:.0f} steps/s" for k, v in rounds.items())
        )

    # Ratios are taken within a round (measurements minutes apart on a shared machine differ by
    # more than the code does), then the median over rounds, with the range over rounds.
    env_sps = [sps for sps, _, _ in rounds["env-only"]]
    print(
        f"\n{args.env_id}, median of {args.repeats} rounds, {args.iterations} timed iterations of {args.num_steps} steps, "
        f"{args.torch_threads} torch thread(s)\n"
    )
    print("| loop | steps/s | / env-only (range) | rollout s/iter | update s/iter |")
    print("|---|---|---|---|---|")
    for name, runs in rounds.items():
        sps, rollout, update = (statistics.median(values[i] for values in runs) for i in range(3))
        fractions = [values[0] / env for values, env in zip(runs, env_sps)]
        timings = "| - | - |" if name == "env-only" else f"| {rollout:.2f} | {update:.2f} |"
        print(
            f"| {name} | {sps:.0f} | {statistics.median(fractions):.2f} ({min(fractions):.2f}-{max(fractions):.2f}) {timings}"
        )
    ratios = [ppo[0] / r2vpo[0] for ppo, r2vpo in zip(rounds["ppo"], rounds["r2vpo"])]
    print(
        f"\nr2vpo / ppo wall time per iteration: {statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f})"
    )
    if args.baseline_dir:
        speedups = [ppo[0] / old[0] for ppo, old in zip(rounds["ppo"], rounds["ppo (baseline)"])]
        print(
            f"ppo speed-up over {args.baseline_dir}: {statistics.median(speedups):.2f}x "
            f"(range {min(speedups):.2f}-{max(speedups):.2f})"
        )


if __name__ == "__main__":
    main()
