"""The named benchmark suites: which runs make up each table of the README.

A suite is tasks x settings x seeds. A *setting* is one method (a training script) with fixed
extra flags, e.g. "r2vpo" or "r2vpo-delta0.01-lr0.5" in the sweep. Every run of a suite has an id

    {task}__{setting}__s{seed}          e.g. SparseHopper-v5__r2vpo__s2

that is unique within the suite and stable across code changes, so a restarted sweep finds the
runs it already finished (see run.py). To change a budget or add seeds, edit the suite here;
to add a task or setting, add it to the lists below. Nothing is executed at import.
"""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Task:
    """One task: its short name (used in run ids and tables) and the flags that select it."""

    name: str
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Setting:
    """One method with fixed extra flags: the script it runs and the flags that define it."""

    label: str
    """name of the setting in run ids, tables and plot legends"""
    method: str
    """method family (ppo, r2vpo, clip, ...)"""
    script: str
    """training script, relative to the repository root (or an absolute path)"""
    flags: tuple[str, ...] = ()
    """extra command-line flags of this setting"""
    same_runs_as: tuple[str, str] | None = None
    """(suite, setting label) whose done runs of the same task and seed are this setting's runs: the same
    method, made by other flags (say in a comment why they are the same, e.g. a same-learning check)"""


@dataclass(frozen=True)
class Suite:
    """A named list of runs: tasks x settings x seeds, with the flags every run gets."""

    name: str
    description: str
    kind: str
    """"control" (return vs environment steps) or "llm" (accuracy vs completions)"""
    tasks: tuple[Task, ...]
    settings: tuple[Setting, ...]
    seeds: tuple[int, ...]
    total_timesteps: int | None
    """budget per run, passed as --total-timesteps (None: the script's default budget)"""
    common_flags: tuple[str, ...] = ()
    """flags every run gets (e.g. the final evaluation)"""
    threads_per_run: int = 1
    """OMP/MKL threads per child (0: all cores, and the runner defaults to one worker)"""
    reuse_from: tuple[str, ...] = field(default=())
    """suites whose finished runs with the same id and the same command count for this one"""
    seed_major: bool = False
    """run every task and setting at one seed before the next seed, so a partial suite stays balanced"""
    frozen: str | None = None
    """why this suite's runs must not be made again by today's scripts (say, made under defaults that have since
    changed): the runner refuses to run it; its results and table stay readable"""


# ---------------------------------------------------------------------------------------------
# Methods: which script implements each method (one file per method, CleanRL style).
PPO = Setting("ppo", "ppo", "ppo_baseline.py")
R2VPO = Setting("r2vpo", "r2vpo", "r2vpo_continuous.py")

DENSE_TASKS = ("Hopper-v5", "Walker2d-v5", "HalfCheetah-v5", "Ant-v5", "Humanoid-v5")
# The variants live in benchmark/envs.py; "benchmark.envs:Id" makes gymnasium import that module.
VARIANT_TASKS = (
    "SparseHopper-v5",
    "SparseWalker2d-v5",
    "SparseHalfCheetah-v5",
    "DynamicHopper-v5",
    "DynamicWalker2d-v5",
)


def control_task(env_id: str) -> Task:
    """A MuJoCo task; the benchmark variants get the module prefix that registers them."""
    module_prefix = "benchmark.envs:" if env_id in VARIANT_TASKS else ""
    return Task(env_id, ("--env-id", module_prefix + env_id))


CONTROL_TASKS = tuple(control_task(env_id) for env_id in DENSE_TASKS + VARIANT_TASKS)
# Every control run ends with a deterministic evaluation of the saved model (eval/episodic_return).
CONTROL_EVAL_FLAGS = ("--save-model", "--eval-episodes", "10")

# The sweep tunes R2VPO's two new hyper-parameters on tasks that are NOT in the results table, so
# the defaults used for the table are not tuned on the reported tasks.
SWEEP_DELTAS = (0.01, 0.02, 0.05)
SWEEP_LAMBDA_LRS = (0.05, 0.5)
SWEEP_SETTINGS = (PPO,) + tuple(
    Setting(
        f"r2vpo-delta{delta}-lr{lambda_lr}",
        "r2vpo",
        R2VPO.script,
        ("--delta", str(delta), "--lambda-lr", str(lambda_lr)),
    )
    for delta in SWEEP_DELTAS
    for lambda_lr in SWEEP_LAMBDA_LRS
)

# Ablations on the control-reduced tasks where R2VPO and PPO differ most (README: how they were chosen). The
# values below come from control-reduced's diagnostics over the runs done when this suite was written
# (python -m benchmark.report --suite control-reduced): R2VPO's multiplier averaged 0.31 over its iterations;
# its median approx_kl was 0.0184 against PPO's 0.0102 (V about 0.83 delta). Equal step size: PPO's clip
# widened by sqrt(0.0184 / 0.0102) (approx_kl grows about with the square of the clip range), R2VPO's delta
# narrowed by 0.0102 / 0.0184 (V, about 2 approx_kl, stays near its budget); the ablation logs the
# approx_kl each one reached.
# The tasks: those whose AUC difference (r2vpo - ppo) has a 95% bootstrap CI that excludes 0, chosen when 9 of
# the 10 tasks were done (Humanoid running): Walker2d +75% of PPO's AUC, HalfCheetah -25%, DynamicHopper -15%.
ABLATION_TASKS = tuple(control_task(env_id) for env_id in ("Walker2d-v5", "HalfCheetah-v5", "DynamicHopper-v5"))
ABLATION_SETTINGS = (
    PPO,
    R2VPO,
    Setting("r2vpo-lambda0", "r2vpo", R2VPO.script, ("--lambda-init", "0", "--lambda-lr", "0")),
    Setting("r2vpo-fixed-lambda1", "r2vpo", R2VPO.script, ("--lambda-init", "1", "--lambda-lr", "0")),
    Setting("r2vpo-fixed-lambda0.31", "r2vpo", R2VPO.script, ("--lambda-init", "0.31", "--lambda-lr", "0")),
    Setting("r2vpo-center-one", "r2vpo", R2VPO.script, ("--variance-center", "one")),
    Setting("ppo-clip0.27", "ppo", PPO.script, ("--clip-coef", "0.27", "--vf-clip-coef", "0.2")),
    Setting("r2vpo-delta0.028", "r2vpo", R2VPO.script, ("--delta", "0.028")),
    Setting("ppo-replay2", "ppo", PPO.script, ("--replay-depth", "2")),
    Setting("ppo-replay4", "ppo", PPO.script, ("--replay-depth", "4")),
    Setting("r2vpo-replay2", "r2vpo", R2VPO.script, ("--replay-depth", "2")),
    Setting("r2vpo-replay4", "r2vpo", R2VPO.script, ("--replay-depth", "4")),
)

# LLM: the clipped GRPO-style baseline and R2VPO, each on-policy and reusing replayed groups so that each
# update takes only half of its completions fresh (the "about 50% fewer rollouts" claim; clip with replay is
# the fair control for it). All runs make the same number of iterations (optimiser steps); the replayed ones
# generate half the completions.
LLM_SCRIPT = "r2vpo_llm.py"
LLM_REPLAY_FLAGS = ("--replay-depth", "2", "--fresh-fraction", "0.5")
# R2VPO's delta and lambda-lr: the llm-screen setting with the largest held-out accuracy AUC (seed 101, not reported).
LLM_R2VPO_FLAGS = ("--loss", "r2vpo", "--delta", "0.1", "--lambda-lr", "1.0")
LLM_SETTINGS = (
    Setting("clip", "clip", LLM_SCRIPT, ("--loss", "clip")),
    Setting("r2vpo", "r2vpo", LLM_SCRIPT, LLM_R2VPO_FLAGS),
    Setting("clip-replay", "clip", LLM_SCRIPT, ("--loss", "clip", *LLM_REPLAY_FLAGS)),
    Setting("r2vpo-replay", "r2vpo", LLM_SCRIPT, (*LLM_R2VPO_FLAGS, *LLM_REPLAY_FLAGS)),
)

# LLM regime scan (issue: where does the clipped loss clip?): the clipped loss under more optimiser
# steps per batch, larger learning rates and replay, from the default job (lr 2e-6, 1 epoch, minibatch
# 16 = 4 steps per 64-completion batch). One seed, 6 iterations, evaluated before and after.
LLM_SCAN_SETTINGS = tuple(
    Setting(label, "clip", LLM_SCRIPT, ("--loss", "clip", *flags))
    for label, flags in (
        ("clip-default", ()),
        ("clip-epochs2", ("--update-epochs", "2")),
        ("clip-epochs4", ("--update-epochs", "4")),
        ("clip-minibatch8", ("--minibatch-size", "8")),
        ("clip-lr5e-6", ("--learning-rate", "5e-6")),
        ("clip-lr1e-5", ("--learning-rate", "1e-5")),
        ("clip-replay2-fresh0.5", ("--replay-depth", "2", "--fresh-fraction", "0.5")),
        ("clip-replay4-fresh0.25", ("--replay-depth", "4", "--fresh-fraction", "0.25")),
    )
)

# The LLM training setting of llm-arith, chosen by llm-scan: the default job at a 5x learning rate, where the
# clipped loss clips about 12% of tokens (median over iterations) and still learns (README, docs/llm.md).
LLM_ARITH_FLAGS = ("--learning-rate", "1e-5")
# R2VPO's LLM delta x lambda-lr screen, on seed 101 (not a reported seed) in that setting.
LLM_SCREEN_SETTINGS = (Setting("clip", "clip", LLM_SCRIPT, ("--loss", "clip")),) + tuple(
    Setting(
        f"r2vpo-delta{delta}-lr{lambda_lr}",
        "r2vpo",
        LLM_SCRIPT,
        ("--loss", "r2vpo", "--delta", str(delta), "--lambda-lr", str(lambda_lr)),
    )
    for delta in (0.02, 0.05, 0.1)
    for lambda_lr in (0.1, 1.0)
)

# The trust-region revision (benchmark/README.md, "Revising the method"): R2VPO's flags are pinned in full in
# every screen setting, so no default of today or tomorrow changes what these runs mean.
R2VPO_V1_FLAGS = (
    "--variance-center", "mean", "--dual-rule", "additive", "--delta", "0.05",
    "--lambda-init", "1.0", "--lambda-lr", "0.5", "--lambda-min", "0.0", "--lambda-max", "100.0",
)  # fmt: skip


def changed_flags(flags: tuple, changes: dict) -> tuple:
    """`flags` (flag, value, flag, value, ...) with some values replaced in place and new flags added at the end."""
    merged = dict(zip(flags[::2], flags[1::2], strict=True)) | changes
    return tuple(x for item in merged.items() for x in item)


def r2vpo_variant(label: str, center: str, dual_rule: str, lambda_min: str = "0.0") -> Setting:
    """R2VPO at v1's delta, lambda_init, lambda_lr and cap, with another centre, dual rule and floor."""
    changes = {"--variance-center": center, "--dual-rule": dual_rule, "--lambda-min": lambda_min}
    return Setting(label, "r2vpo", R2VPO.script, changed_flags(R2VPO_V1_FLAGS, changes))


SCREEN_TASKS = tuple(
    control_task(env_id) for env_id in ("Ant-v5", "SparseHopper-v5", "DynamicWalker2d-v5", "HalfCheetah-v5")
)
SCREEN_SETTINGS = (
    PPO,
    Setting("r2vpo-v1", "r2vpo", R2VPO.script, R2VPO_V1_FLAGS),
    r2vpo_variant("r2vpo-one-additive", "one", "additive"),
    r2vpo_variant("r2vpo-one-bounded", "one", "bounded"),
    r2vpo_variant("r2vpo-one-multiplicative", "one", "multiplicative", lambda_min="0.01"),
)

# The LLM half of the revision's screen: seeds 101-102 (reported by no table), the llm-arith setting at 12
# iterations. Every method flag pinned. Two deltas: V centred on 1 is larger than the mean-centred V, and the
# constraint bound at V of about 0.005-0.05 in llm-screen's probe. CISPO's cap is chosen here too (TRL's 5
# after ScaleRL, Trinity-RFT's 1 + 0.28).
LLM_R2VPO_V1_FLAGS = (
    "--loss", "r2vpo", "--variance-center", "mean", "--dual-rule", "additive", "--ratio-level", "token",
    "--lambda-init", "1.0", "--lambda-lr", "1.0", "--lambda-min", "0.0", "--lambda-max", "100.0",
)  # fmt: skip
LLM_SCREEN_DELTAS = ("0.02", "0.1")


def llm_r2vpo_variant(center: str, dual_rule: str, delta: str) -> Setting:
    """R2VPO on the LLM at v1's lambda_init, lambda_lr and cap, with a centre, dual rule and delta."""
    lambda_min = "0.01" if dual_rule == "multiplicative" else "0.0"
    changes = {"--variance-center": center, "--dual-rule": dual_rule, "--lambda-min": lambda_min, "--delta": delta}
    label = f"r2vpo-{'v1' if center == 'mean' else 'one-' + dual_rule}-delta{delta}"
    return Setting(label, "r2vpo", LLM_SCRIPT, changed_flags(LLM_R2VPO_V1_FLAGS, changes))


LLM_TRUST_SCREEN_SETTINGS = (
    Setting("clip", "clip", LLM_SCRIPT, ("--loss", "clip")),
    *(llm_r2vpo_variant("mean", "additive", delta) for delta in LLM_SCREEN_DELTAS),
    *(
        llm_r2vpo_variant("one", rule, delta)
        for rule in ("additive", "bounded", "multiplicative")
        for delta in LLM_SCREEN_DELTAS
    ),
    Setting("cispo-w1.28", "cispo", LLM_SCRIPT, ("--loss", "cispo", "--cispo-max-weight", "1.28")),
    Setting("cispo-w5", "cispo", LLM_SCRIPT, ("--loss", "cispo", "--cispo-max-weight", "5.0")),
)

# The revised method, as benchmark/decide_revision.py applied the written rule to the two screens: every flag
# pinned, so these runs mean the same whatever the defaults become.
R2VPO_REVISED_FLAGS = (
    "--variance-center", "one", "--dual-rule", "multiplicative", "--delta", "0.05",
    "--lambda-init", "1.0", "--lambda-lr", "0.5", "--lambda-min", "0.01", "--lambda-max", "100.0",
)  # fmt: skip
LLM_R2VPO_REVISED_FLAGS = (
    "--loss", "r2vpo", "--variance-center", "one", "--dual-rule", "multiplicative", "--ratio-level", "token",
    "--lambda-init", "1.0", "--lambda-lr", "1.0", "--lambda-min", "0.01", "--lambda-max", "100.0",
    "--delta", "0.1",
)  # fmt: skip
CISPO_FLAGS = ("--loss", "cispo", "--cispo-max-weight", "5.0")
M2PO_FLAGS = ("--loss", "m2po", "--m2po-tau", "0.04")
LLM_FULL_SETTINGS = (
    Setting("clip", "clip", LLM_SCRIPT, ("--loss", "clip")),
    Setting("cispo", "cispo", LLM_SCRIPT, CISPO_FLAGS),
    Setting("r2vpo", "r2vpo", LLM_SCRIPT, LLM_R2VPO_REVISED_FLAGS),
    Setting("clip-replay", "clip", LLM_SCRIPT, ("--loss", "clip", *LLM_REPLAY_FLAGS)),
    Setting("r2vpo-replay", "r2vpo", LLM_SCRIPT, (*LLM_R2VPO_REVISED_FLAGS, *LLM_REPLAY_FLAGS)),
    Setting("m2po-replay", "m2po", LLM_SCRIPT, (*M2PO_FLAGS, *LLM_REPLAY_FLAGS)),
)
R2VPO_REVISED = Setting("r2vpo", "r2vpo", R2VPO.script, R2VPO_REVISED_FLAGS)
# The confirmation: control-reduced's ppo runs (same ids and commands) and its r2vpo runs, which are the first
# version's: made by its defaults, spelled out here (benchmark/results/same-learning: the same returns).
CONFIRMATION_SETTINGS = (
    PPO,
    Setting("r2vpo-v1", "r2vpo", R2VPO.script, R2VPO_V1_FLAGS, same_runs_as=("control-reduced", "r2vpo")),
    Setting("r2vpo-revised", "r2vpo", R2VPO.script, R2VPO_REVISED_FLAGS),
)

# Suites whose R2VPO runs rely on the first version's defaults, which the revision changes: the runner refuses to
# run them again (their results and tables stay), so a rerun cannot make the revised method's runs under their labels.
FIRST_VERSION = (
    "made under the first version's defaults (variance centred on the batch mean, additive dual step), "
    "which the revision changes"
)

SUITES = {
    suite.name: suite
    for suite in (
        Suite(
            name="control-full",
            description="The 10-task table: 5 dense MuJoCo tasks + 3 sparse + 2 dynamic variants, "
            "ppo vs r2vpo, 5 seeds, 1M steps (100 runs, ~25 CPU-hours: a cluster job).",
            kind="control",
            tasks=CONTROL_TASKS,
            settings=(PPO, R2VPO_REVISED),
            seeds=(1, 2, 3, 4, 5),
            total_timesteps=1_000_000,
            common_flags=CONTROL_EVAL_FLAGS,
            seed_major=True,
        ),
        Suite(
            name="control-revised",
            description="The revision's confirmation: control-reduced's 10 tasks x seeds 1-3 x 300k with the revised "
            "R2VPO (every flag pinned), beside control-reduced's ppo and first-version r2vpo runs (30 new runs).",
            kind="control",
            tasks=CONTROL_TASKS,
            settings=CONFIRMATION_SETTINGS,
            seeds=(1, 2, 3),
            total_timesteps=300_000,
            common_flags=CONTROL_EVAL_FLAGS,
            reuse_from=("control-reduced",),
            seed_major=True,
        ),
        Suite(
            name="control-reduced",
            description="The same 10 tasks x ppo, r2vpo at a budget one machine can do: 3 seeds, 300k "
            "steps (60 runs, ~3 h on 2 cores). Every run is made by the current scripts: control-pilot's "
            "runs came from earlier code (another random stream, no losses/* on Hopper) and are not reused.",
            kind="control",
            tasks=CONTROL_TASKS,
            settings=(PPO, R2VPO),
            seeds=(1, 2, 3),
            total_timesteps=300_000,
            common_flags=CONTROL_EVAL_FLAGS,
            frozen=FIRST_VERSION,
        ),
        Suite(
            name="control-pilot",
            description="Pilot subset of control-reduced: Hopper, SparseHopper, DynamicHopper x ppo, r2vpo "
            "x 2 seeds x 300k steps (12 runs, same ids and commands as in control-reduced).",
            kind="control",
            tasks=tuple(control_task(env_id) for env_id in ("Hopper-v5", "SparseHopper-v5", "DynamicHopper-v5")),
            settings=(PPO, R2VPO),
            seeds=(1, 2),
            total_timesteps=300_000,
            common_flags=CONTROL_EVAL_FLAGS,
            frozen=FIRST_VERSION,
        ),
        Suite(
            name="control-sweep",
            description="R2VPO delta in {0.01, 0.02, 0.05} x lambda-lr in {0.05, 0.5}, plus a ppo reference, "
            "on InvertedDoublePendulum-v5 and Swimmer-v5 (not in the table), 1 seed, 100k steps (14 runs, "
            "~40 min on 2 cores): a screen that the 2-core machine can afford, not a ranking.",
            kind="control",
            tasks=(control_task("InvertedDoublePendulum-v5"), control_task("Swimmer-v5")),
            settings=SWEEP_SETTINGS,
            seeds=(1,),
            total_timesteps=100_000,
            common_flags=CONTROL_EVAL_FLAGS,
            frozen=FIRST_VERSION,
        ),
        Suite(
            name="control-ablation",
            description="What makes R2VPO differ from PPO, on the control-reduced tasks where they differ most: lambda "
            "held at 0, fixed at 1 and at its mean, the variance centred on 1, equal step sizes (PPO's clip widened, "
            "R2VPO's delta narrowed to the other's approx_kl), replay depth 2 and 4 for both; 3 seeds x 300k steps. "
            "ppo and r2vpo rows are control-reduced's runs.",
            kind="control",
            tasks=ABLATION_TASKS,
            settings=ABLATION_SETTINGS,
            seeds=(1, 2, 3),
            total_timesteps=300_000,
            common_flags=CONTROL_EVAL_FLAGS,
            reuse_from=("control-reduced",),
            frozen=FIRST_VERSION,
        ),
        Suite(
            name="control-screen",
            description="The trust-region revision's screen on seeds no table reports (100, 101): the variance "
            "centred on 1 with three dual rules (additive = v1's, bounded, multiplicative) against v1 and ppo, on "
            "Ant, SparseHopper, DynamicWalker2d and HalfCheetah (-v5), 300k steps (40 runs, ~3 CPU-hours).",
            kind="control",
            tasks=SCREEN_TASKS,
            settings=SCREEN_SETTINGS,
            seeds=(100, 101),
            total_timesteps=300_000,
            common_flags=CONTROL_EVAL_FLAGS,
            seed_major=True,
        ),
        Suite(
            name="control-check",
            description="Sanity check of the two scripts: Hopper-v5 and InvertedPendulum-v5 x ppo, r2vpo "
            "x 2 seeds x 200k steps (8 runs).",
            kind="control",
            tasks=(control_task("Hopper-v5"), control_task("InvertedPendulum-v5")),
            settings=(PPO, R2VPO),
            seeds=(1, 2),
            total_timesteps=200_000,
            common_flags=CONTROL_EVAL_FLAGS,
            frozen=FIRST_VERSION,
        ),
        Suite(
            name="llm-scan",
            description="Where the clipped loss clips on the default LLM job: more optimiser steps per batch, larger "
            "learning rates, replay; clip only, seed 1, 6 iterations x 64 completions (8 runs, ~2 CPU-hours).",
            kind="llm",
            tasks=(Task("arith"),),
            settings=LLM_SCAN_SETTINGS,
            seeds=(1,),
            total_timesteps=None,
            common_flags=("--num-iterations", "6", "--eval-every", "6", "--num-threads", "1"),
            threads_per_run=1,
            frozen=FIRST_VERSION,
        ),
        Suite(
            name="llm-screen",
            description="R2VPO's LLM delta x lambda-lr on seed 101 (not reported) in the llm-arith setting, "
            "12 iterations x 64 completions, with a clip reference (7 runs).",
            kind="llm",
            tasks=(Task("arith"),),
            settings=LLM_SCREEN_SETTINGS,
            seeds=(101,),
            total_timesteps=None,
            common_flags=(*LLM_ARITH_FLAGS, "--num-iterations", "12", "--eval-every", "6", "--num-threads", "1"),
            threads_per_run=1,
            frozen=FIRST_VERSION,
        ),
        Suite(
            name="llm-trust-screen",
            description="The LLM half of the revision's screen, seeds 101-102 (not reported) in the llm-arith setting "
            "at 12 iterations: clip, r2vpo v1 and the variance centred on 1 with the additive, bounded and "
            "multiplicative dual rules, each at delta 0.02 and 0.1, and CISPO with its cap at 1.28 and 5 (22 runs; "
            "clip at seed 101 is llm-screen's run).",
            kind="llm",
            tasks=(Task("arith"),),
            settings=LLM_TRUST_SCREEN_SETTINGS,
            seeds=(101, 102),
            total_timesteps=None,
            common_flags=(*LLM_ARITH_FLAGS, "--num-iterations", "12", "--eval-every", "6", "--num-threads", "1"),
            threads_per_run=1,
            reuse_from=("llm-screen",),
            seed_major=True,
        ),
        Suite(
            name="llm-full",
            description="Both LLM claims with the power to decide: clip, cispo, the revised r2vpo, each on-policy and "
            "clip, r2vpo, m2po with replay (depth 2, half fresh), seeds 1-6, the llm-arith setting (30 iterations x "
            "64 completions, lr 1e-5), held-out accuracy on 512 problems before, at iteration 15 and 30 (36 runs).",
            kind="llm",
            tasks=(Task("arith"),),
            settings=LLM_FULL_SETTINGS,
            seeds=(1, 2, 3, 4, 5, 6),
            total_timesteps=None,
            common_flags=(
                *LLM_ARITH_FLAGS,
                "--num-iterations",
                "30",
                "--eval-every",
                "15",
                "--num-eval-prompts",
                "512",
                "--num-threads",
                "1",
            ),
            threads_per_run=1,
            seed_major=True,
        ),
        Suite(
            name="llm-arith",
            description="LLM arithmetic on r2vpo_llm.py's default offline model and task in the llm-scan setting "
            "(lr 1e-5: the clipped loss clips ~12% of tokens): clip and r2vpo (delta 0.1, lambda-lr 1.0 from "
            "llm-screen), on-policy and with replay (depth 2, half the completions fresh), 3 seeds, 30 iterations, "
            "held-out accuracy every 5 (12 runs).",
            kind="llm",
            tasks=(Task("arith"),),
            settings=LLM_SETTINGS,
            seeds=(1, 2, 3),
            total_timesteps=None,
            common_flags=(*LLM_ARITH_FLAGS, "--num-iterations", "30", "--eval-every", "5", "--num-threads", "1"),
            threads_per_run=1,
            frozen=FIRST_VERSION,
        ),
    )
}
