"""One update of r2vpo_llm_fsdp.py's policy from a fixed training batch, in one process or under torchrun,
or of r2vpo_llm.py's (the one-process file) with --one-process-file.

    python tests/distributed_update.py OUT [--micro-batch-size 4 ...]            # one process
    torchrun --nproc_per_node 2 tests/distributed_update.py OUT [...]            # FSDP2, gloo on CPU
    python tests/distributed_update.py OUT --one-process-file [...]              # r2vpo_llm.py's update_policy
    torchrun --nproc_per_node 2 tests/distributed_update.py OUT --load-on-rank0  # the model main() builds: rank 0
                                                                                 # loads, the others get it sharded

Rank 0 writes OUT (the full float32 parameters, lambda and the update's statistics, with `gradients_held`:
how many parameters still hold a gradient afterwards); every rank
writes OUT.rank<r>.json with the lambda it ended with. tests/test_llm_fsdp.py compares the runs.
"""

import json
import os
import sys

import torch
import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import r2vpo_llm  # noqa: E402
import r2vpo_llm_fsdp as llm  # noqa: E402

ARGS = [
    "--model-name-or-path",
    "tiny-random",
    "--group-size",
    "4",
    "--prompts-per-iteration",
    "8",
    "--minibatch-size",
    "16",
    "--update-epochs",
    "2",
    "--learning-rate",
    "1e-4",
    "--max-new-tokens",
    "6",
    "--lambda-lr",
    "1.0",
    "--delta",
    "0.01",
]


def fixed_training_groups(model, tokenizer, args, seed=0):
    """Groups of real sampled completions with random advantages and behaviour log-probs that differ
    from the policy's (so ratios spread and both terms of each loss matter)."""
    torch.manual_seed(seed)
    _, problems = llm.arithmetic_problems(args.prompts_per_iteration, 1)
    prompts = [llm.prompt_ids(tokenizer, p, llm.ARITHMETIC_SYSTEM_PROMPT) for p in problems]
    eos = model.generation_config.eos_token_id
    completions = llm.generate(
        model, prompts, args.group_size, eos, tokenizer.pad_token_id, args.max_new_tokens, 64, temperature=1.0
    )
    # The first group stopped at once (end-of-sequence only): its micro-batch has 1-token completions while another
    # process's has longer ones, which must not change the number of forward passes a process makes.
    completions[: args.group_size] = [torch.tensor([eos[0]]) for _ in range(args.group_size)]
    advantages = torch.randn(len(completions))
    samples = [
        {
            "group": (0, k // args.group_size),
            "prompt_ids": prompts[k // args.group_size],
            "completion_ids": c,
            "advantage": advantages[k].item(),
            "version": 0,
        }
        for k, c in enumerate(completions)
    ]
    with torch.no_grad():
        logprobs = llm.completion_logprobs(model, llm.collate(samples, tokenizer.pad_token_id, "cpu"), 1.0)
    for k, sample in enumerate(samples):
        n = len(sample["completion_ids"])
        sample["behavior_logprobs"] = logprobs[k, :n] + 0.3 * torch.randn(n)
    return [samples[i : i + args.group_size] for i in range(0, len(samples), args.group_size)]


def main():
    out, flags = sys.argv[1], [flag for flag in sys.argv[2:] if flag not in ("--one-process-file", "--load-on-rank0")]
    one_process_file, load_on_rank0 = "--one-process-file" in sys.argv[2:], "--load-on-rank0" in sys.argv[2:]
    args = tyro.cli(llm.Args, args=ARGS + flags)
    rank, world_size, device = llm.setup_distributed(use_cuda=False)
    llm.check_args(args, world_size)
    model, tokenizer = llm.load_model_and_tokenizer("tiny-random", seed=3)
    groups = fixed_training_groups(model, tokenizer, args)
    weights = None
    if load_on_rank0:  # main()'s way: the same weights, loaded by rank 0 only and sent to the others' meta-device model
        model, tokenizer, weights = llm.model_from_rank0("tiny-random", 3, rank)
    if args.gradient_checkpointing:
        llm.enable_gradient_checkpointing(model)
    if world_size > 1:
        llm.shard_model(model)
        if load_on_rank0:
            llm.fill_from_rank0(model, weights, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.0)
    torch.manual_seed(1)  # the shuffle (rank 0's is used everywhere)
    model.train()
    if one_process_file:
        simple_args = tyro.cli(r2vpo_llm.Args, args=ARGS + flags)
        lagrange_multiplier, stats = r2vpo_llm.update_policy(
            model, optimizer, groups, args.lambda_init, simple_args, tokenizer.pad_token_id
        )
    else:
        lagrange_multiplier, stats = llm.update_policy(
            model, optimizer, groups, args.lambda_init, args, tokenizer.pad_token_id, rank, world_size
        )
    stats["gradients_held"] = sum(parameter.grad is not None for parameter in model.parameters())
    options = llm.StateDictOptions(full_state_dict=True, cpu_offload=True)
    parameters = llm.get_model_state_dict(model, options=options)
    with open(f"{out}.rank{rank}.json", "w") as file:
        json.dump({"lambda": lagrange_multiplier}, file)
    if rank == 0:
        torch.save({"parameters": parameters, "lambda": lagrange_multiplier, "stats": stats}, out)
    if world_size > 1:
        llm.dist.barrier()  # no process shuts down while another still writes
        llm.dist.destroy_process_group()


if __name__ == "__main__":
    main()
