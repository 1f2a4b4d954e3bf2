"""Tests of ppo_baseline.py and r2vpo_continuous.py: the math on small tensors, then both
scripts end to end on Hopper-v5 with tiny budgets, then bad input."""

import glob
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import tyro
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import ppo_baseline
import r2vpo_continuous

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["ppo_baseline.py", "r2vpo_continuous.py"]
TINY = [
    "--env-id",
    "Hopper-v5",
    "--total-timesteps",
    "128",
    "--num-steps",
    "64",
    "--num-minibatches",
    "4",
    "--update-epochs",
    "2",
]


# ---------------------------------------------------------------- GAE


def reference_gae(rewards, values, next_values, terminations, dones, gamma, lam):
    """Plain per-element loop, written independently of compute_gae."""
    T, N = rewards.shape
    adv = torch.zeros(T, N)
    for n in range(N):
        running = 0.0
        for t in reversed(range(T)):
            bootstrap = 0.0 if terminations[t, n] else next_values[t, n]
            delta = rewards[t, n] + gamma * bootstrap - values[t, n]
            if dones[t, n]:
                running = 0.0
            running = delta + gamma * lam * running
            adv[t, n] = running
    return adv


@pytest.mark.parametrize("module", [ppo_baseline, r2vpo_continuous])
def test_gae_matches_reference_with_termination_and_truncation(module):
    torch.manual_seed(0)
    T, N = 7, 2
    rewards, values, next_values = torch.randn(T, N), torch.randn(T, N), torch.randn(T, N)
    terminations, dones = torch.zeros(T, N), torch.zeros(T, N)
    terminations[2, 0] = dones[2, 0] = 1.0  # env 0 terminates mid-rollout
    dones[4, 1] = 1.0  # env 1 is truncated mid-rollout: bootstraps V(final obs), cuts the trace
    advantages, returns = module.compute_gae(rewards, values, next_values, terminations, dones, 0.99, 0.95)
    expected = reference_gae(rewards, values, next_values, terminations, dones, 0.99, 0.95)
    torch.testing.assert_close(advantages, expected)
    torch.testing.assert_close(returns, expected + values)
    # truncation differs from termination: the final observation's value is used
    terminated_instead = terminations.clone()
    terminated_instead[4, 1] = 1.0
    other, _ = module.compute_gae(rewards, values, next_values, terminated_instead, dones, 0.99, 0.95)
    assert not torch.allclose(other[4, 1], advantages[4, 1])
    torch.testing.assert_close(other[5:, 1], advantages[5:, 1])  # nothing leaks across the cut


# ---------------------------------------------------------------- policy


def agent_with_unequal_stds(module):
    """A 5-observation, 3-action agent whose action dimensions have different log stds."""
    torch.manual_seed(0)
    agent = module.Agent(5, 3)
    with torch.no_grad():
        agent.actor_logstd.copy_(torch.tensor([[-0.5, 0.0, 0.7]]))
    return agent


@pytest.mark.parametrize("module", [ppo_baseline, r2vpo_continuous])
def test_written_out_gaussian_matches_torch_distributions(module):
    agent = agent_with_unequal_stds(module)
    obs, actions = torch.randn(4, 8, 5), torch.randn(4, 8, 3)  # (steps, envs, dim), as after a rollout
    log_prob, entropy = agent.get_logprob_entropy(obs, actions)
    (log_prob.sum() + entropy.sum()).backward()
    actor_params = [*agent.actor_mean.parameters(), agent.actor_logstd]
    grads = [p.grad.clone() for p in actor_params]

    agent.zero_grad()
    normal = torch.distributions.Normal(agent.actor_mean(obs), agent.actor_logstd.exp())
    expected_log_prob, expected_entropy = normal.log_prob(actions).sum(-1), normal.entropy().sum(-1)
    (expected_log_prob.sum() + expected_entropy.sum()).backward()
    torch.testing.assert_close(log_prob, expected_log_prob)
    torch.testing.assert_close(entropy, expected_entropy)
    for grad, param in zip(grads, actor_params):
        torch.testing.assert_close(grad, param.grad)


@pytest.mark.parametrize("module", [ppo_baseline, r2vpo_continuous])
def test_numpy_actor_samples_from_the_torch_policy(module):
    agent = agent_with_unequal_stds(module)
    with torch.no_grad():
        agent.actor_mean[4].weight.mul_(100.0)  # a mean far from 0, so a wrong mean cannot pass
    sample_action = agent.numpy_actor()
    obs = np.random.default_rng(1).standard_normal((2, 5)).astype(np.float32)  # (num_envs, obs_dim)
    with torch.no_grad():
        torch_mean = agent.actor_mean(torch.from_numpy(obs)).numpy()
        std = agent.actor_logstd.exp().numpy()

    action = sample_action(obs, np.random.default_rng(7))
    noise = np.random.default_rng(7).standard_normal((2, 3), dtype=np.float32)
    assert action.dtype == np.float32 and action.shape == (2, 3)
    np.testing.assert_allclose(action, torch_mean + std * noise, rtol=1e-5, atol=1e-5)
    samples = np.concatenate([sample_action(obs[:1], np.random.default_rng(i)) for i in range(2000)])
    np.testing.assert_allclose(samples.std(0), std[0], rtol=0.1)
    np.testing.assert_allclose(samples.mean(0), torch_mean[0], atol=0.15)

    with torch.no_grad():  # a copy: later updates of the agent do not leak into this rollout's actor
        agent.actor_mean[4].bias.add_(1.0)
    np.testing.assert_array_equal(sample_action(obs, np.random.default_rng(7)), action)
    np.testing.assert_allclose(agent.numpy_actor()(obs, np.random.default_rng(7)), action + 1.0, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- losses


def test_r2vpo_gradient_matches_soft_brake_formula():
    torch.manual_seed(1)
    behavior = torch.randn(16)
    new = (behavior + 0.3 * torch.randn(16)).requires_grad_()
    advantages = torch.randn(16)
    lam = 2.5
    loss, variance = r2vpo_continuous.r2vpo_policy_loss(new, behavior, advantages, lam)
    loss.backward()
    r = (new.detach() - behavior).exp()
    expected = -(1 / 16) * r * (advantages - 2 * lam * (r - r.mean()))
    torch.testing.assert_close(new.grad, expected)
    torch.testing.assert_close(variance, r.var(unbiased=False))
    assert not variance.requires_grad


def test_r2vpo_centre_one_uses_second_moment_around_one():
    """Against numbers computed another way, in float64 with numpy: V around 1 is the population variance plus
    the squared distance of the mean ratio from 1, and its gradient brakes each ratio towards 1 (not towards
    the batch mean): d/dlogp [-mean(r A) + lam mean((r - 1)^2)] = -r (A - 2 lam (r - 1)) / n."""
    torch.manual_seed(4)
    behavior = torch.randn(8)
    new = (behavior + 0.2 + 0.3 * torch.randn(8)).requires_grad_()  # mean ratio clearly above 1
    advantages, lam = torch.randn(8), 1.5
    loss, variance = r2vpo_continuous.r2vpo_policy_loss(new, behavior, advantages, lam, center="one")
    loss.backward()
    r = np.exp(new.detach().numpy().astype(np.float64) - behavior.numpy().astype(np.float64))
    assert np.mean(r) - 1 > 0.1  # so the two centres differ
    assert variance.item() == pytest.approx(np.var(r) + (np.mean(r) - 1) ** 2, rel=1e-5)
    _, around_mean = r2vpo_continuous.r2vpo_policy_loss(new, behavior, advantages, lam)
    assert variance.item() - around_mean.item() == pytest.approx((np.mean(r) - 1) ** 2, rel=1e-4)
    expected_gradient = -r * (advantages.numpy() - 2 * lam * (r - 1)) / 8
    np.testing.assert_allclose(new.grad.numpy(), expected_gradient, rtol=1e-5, atol=1e-6)


def test_r2vpo_zero_variance_when_on_policy():
    logp = torch.randn(10)
    loss, variance = r2vpo_continuous.r2vpo_policy_loss(logp, logp.clone(), torch.randn(10), 5.0)
    assert variance.item() == 0.0


def test_r2vpo_with_zero_lambda_is_importance_weighted_policy_gradient():
    torch.manual_seed(2)
    behavior, advantages = torch.randn(12), torch.randn(12)
    new = (behavior + 0.5 * torch.randn(12)).requires_grad_()
    loss, _ = r2vpo_continuous.r2vpo_policy_loss(new, behavior, advantages, 0.0)
    loss.backward()
    r = (new.detach() - behavior).exp()
    torch.testing.assert_close(loss.detach(), -(r * advantages).mean())
    torch.testing.assert_close(new.grad, -r * advantages / 12)


def test_far_ratios_keep_gradient_in_r2vpo_but_not_in_ppo_clip():
    # ratios 1.6 with A > 0 and 0.5 with A < 0 sit outside [0.8, 1.2] in the direction of A:
    # PPO zeroes them, R2VPO keeps a (braked) gradient.
    behavior = torch.zeros(4)
    ratios = torch.tensor([1.6, 0.5, 1.0, 1.05])
    advantages = torch.tensor([2.0, -2.0, 0.5, -0.5])
    new_ppo = ratios.log().requires_grad_()
    ppo_baseline.ppo_clip_loss(new_ppo, behavior, advantages, 0.2).backward()
    assert new_ppo.grad[0] == 0 and new_ppo.grad[1] == 0
    assert new_ppo.grad[2] != 0 and new_ppo.grad[3] != 0
    new_r2 = ratios.log().requires_grad_()
    loss, _ = r2vpo_continuous.r2vpo_policy_loss(new_r2, behavior, advantages, 1.0)
    loss.backward()
    assert (new_r2.grad[:2].abs() > 1e-3).all()


def test_extreme_log_ratios_stay_finite():
    new = torch.tensor([1000.0, -1000.0, 0.0, 3.0], requires_grad=True)
    loss, variance = r2vpo_continuous.r2vpo_policy_loss(new, torch.zeros(4), torch.randn(4), 10.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(variance) and torch.isfinite(new.grad).all()


# ---------------------------------------------------------------- dual update


def test_dual_update_additive_is_v1():
    def dual(lam, v, delta, lr, lambda_max, lambda_min=0.0):
        return r2vpo_continuous.dual_update(lam, v, delta, "additive", lr, lambda_min, lambda_max)

    assert dual(1.0, 0.04, 0.02, 0.1, 100.0) == pytest.approx(1.1)  # V = 2 delta: +lr
    assert dual(1.0, 0.0, 0.02, 0.1, 100.0) == pytest.approx(0.9)  # V = 0: -lr
    assert dual(0.05, 0.0, 0.02, 0.1, 100.0) == 0.0  # projected onto lambda >= 0
    assert dual(0.05, 0.0, 0.02, 0.1, 100.0, lambda_min=0.01) == 0.01  # ... or onto the floor
    assert dual(99.0, 10.0, 0.02, 0.1, 100.0) == 100.0  # capped at lambda_max
    assert dual(1.0, 0.22, 0.02, 0.1, 100.0) == pytest.approx(2.0)  # unbounded: V = 11 delta moves it 10 lr
    assert dual(3.0, torch.tensor(0.02), 0.02, 0.5, 100.0) == pytest.approx(3.0)  # on the boundary
    assert isinstance(dual(1.0, torch.tensor(0.5), 0.02, 0.1, 100.0), float)
    with pytest.raises(ValueError):
        dual(1.0, 0.1, 0.0, 0.1, 100.0)


def test_dual_update_bounded_clips_the_violation():
    def dual(lam, v):
        return r2vpo_continuous.dual_update(lam, v, 0.02, "bounded", 0.5, 0.0, 100.0)

    assert dual(1.0, 0.22) == pytest.approx(1.5)  # violation 10 clipped to 1: one lr at most
    assert dual(1.0, 0.03) == pytest.approx(1.25)  # violation 0.5 inside [-1, 1]: as additive
    assert dual(1.0, 0.0) == pytest.approx(0.5)  # violation -1: the most it can fall
    assert dual(0.2, 0.0) == 0.0  # projected onto lambda >= 0


def test_dual_update_multiplicative_doubles_or_halves_at_most():
    def dual(lam, v, lambda_min=0.01, lambda_max=100.0):
        return r2vpo_continuous.dual_update(lam, v, 0.05, "multiplicative", 0.5, lambda_min, lambda_max)

    assert dual(1.0, 0.06) == pytest.approx(1.2)  # V / delta = 1.2 inside [1/2, 2]
    assert dual(1.0, 0.04) == pytest.approx(0.8)
    assert dual(3.0, 5.0) == pytest.approx(6.0)  # V = 100 delta: doubled, no more
    assert dual(3.0, 0.0) == pytest.approx(1.5)  # V = 0: halved, no less
    assert dual(0.015, 0.0) == 0.01  # the floor
    assert dual(80.0, 1.0) == 100.0  # the cap
    assert dual(2.0, 0.05) == pytest.approx(2.0)  # on the boundary


# ---------------------------------------------------------------- end to end


def run_script(script, *flags, cwd, env=None):
    return subprocess.run(
        [sys.executable, str(ROOT / script), *flags], cwd=cwd, capture_output=True, text=True, timeout=300, env=env
    )


def read_scalars(run_dir):
    (event_file,) = glob.glob(os.path.join(run_dir, "runs", "*", "events.out.tfevents.*"))
    accumulator = EventAccumulator(event_file, size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: [event.value for event in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


COMMON_TAGS = {
    "charts/episodic_return",
    "charts/episodic_length",
    "charts/SPS",
    "charts/learning_rate",
    "charts/rollout_time",
    "charts/update_time",
    "losses/policy_loss",
    "losses/value_loss",
    "losses/entropy",
    "losses/approx_kl",
    "losses/old_approx_kl",
    "losses/ratio_variance",
    "losses/ess",
    "losses/explained_variance",
    "losses/ratio_population_variance",
    "losses/ratio_second_moment",
    "charts/minibatch_size",
}
METHOD_TAGS = {
    "ppo_baseline.py": {"losses/clipfrac"},
    "r2vpo_continuous.py": {
        "losses/would_clip_frac",
        "losses/lambda",
        "losses/lambda_max",
        "losses/constraint_violation",
    },
}


@pytest.mark.parametrize("script", SCRIPTS)
def test_end_to_end_logs_tags_saves_and_evaluates(script, tmp_path):
    result = run_script(script, *TINY, "--save-model", "--eval-episodes", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    scalars = read_scalars(tmp_path)
    assert COMMON_TAGS | METHOD_TAGS[script] <= set(scalars)
    assert len(scalars["losses/policy_loss"]) == 2  # 2 iterations
    assert len(scalars["eval/episodic_return"]) == 2
    assert all(value == value for values in scalars.values() for value in values)  # no NaN
    (model,) = glob.glob(str(tmp_path / "runs" / "*" / "*.cleanrl_model"))
    checkpoint = torch.load(model)
    assert checkpoint["obs_rms"][0].shape == (11,)  # Hopper's observation statistics travel with it


@pytest.mark.parametrize("script", SCRIPTS)
def test_end_to_end_replay_and_vector_envs(script, tmp_path):
    result = run_script(
        script, *TINY, "--num-envs", "2", "--replay-depth", "2", "--total-timesteps", "256", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    scalars = read_scalars(tmp_path)
    assert len(scalars["losses/policy_loss"]) == 2  # 2 envs x 64 steps = 128-step iterations
    assert scalars["charts/episodic_return"]
    assert scalars["charts/minibatch_size"] == [32, 64]  # 128 / 4, then two kept rollouts: 256 / 4


@pytest.mark.parametrize("rule", ["bounded", "multiplicative"])
def test_end_to_end_dual_rules(rule, tmp_path):
    flags = ("--dual-rule", rule, "--lambda-min", "0.01", "--variance-center", "one", "--total-timesteps", "256")
    result = run_script("r2vpo_continuous.py", *TINY, *flags, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    scalars = read_scalars(tmp_path)
    means, maxima = scalars["losses/lambda"], scalars["losses/lambda_max"]
    assert len(means) == 4 and min(means) >= 0.01 * (1 - 1e-6)  # tensorboard stores float32
    if rule == "multiplicative":  # one step per iteration: constant within it, x2 or /2 at most between
        assert means == maxima
        assert means[0] == 1.0 and all(
            0.5 - 1e-6 <= after / before <= 2.0 + 1e-6 for before, after in zip(means, means[1:])
        )
    else:  # lr 0.5 per optimiser step at most, TINY's 4 x 2 steps per iteration
        assert max(maxima) <= 1.0 + 0.5 * 8 * 4


def test_same_seed_gives_identical_losses(tmp_path):
    logged = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        result = run_script("r2vpo_continuous.py", *TINY, "--replay-depth", "2", "--seed", "3", cwd=tmp_path / name)
        assert result.returncode == 0, result.stderr
        scalars = read_scalars(tmp_path / name)
        logged.append(
            {tag: values for tag, values in scalars.items() if tag.startswith("losses/") or "episodic" in tag}
        )
    assert logged[0] == logged[1]


# ---------------------------------------------------------------- bad input

# Each of these once trained on silently (NaN, gradient ascent, an inverted clamp) or crashed with a
# traceback: check_args must refuse it in one line, before any environment exists.
REFUSED_BY_BOTH = [
    (["--learning-rate", "inf"], "--learning-rate must be finite"),
    (["--learning-rate", "nan"], "--learning-rate must be finite"),
    (["--learning-rate", "0"], "--learning-rate must be > 0"),
    (["--vf-coef", "nan"], "--vf-coef must be finite"),
    (["--vf-coef", "-0.5"], "--vf-coef must be >= 0"),
    (["--ent-coef", "-0.01"], "--ent-coef must be >= 0"),
    (["--max-grad-norm", "-1"], "--max-grad-norm must be > 0"),
    (["--clip-coef", "-0.2"], "--clip-coef must be > 0"),
    (["--target-kl", "-1"], "--target-kl must be > 0"),
    (["--target-kl", "inf"], "--target-kl must be finite"),
    (["--vf-clip-coef", "0"], "--vf-clip-coef must be > 0"),
    (["--gamma", "1.5"], "--gamma must be in (0, 1]"),
    (["--gae-lambda", "nan"], "--gae-lambda must be finite"),
    (["--torch-threads", "0"], "--torch-threads must be >= 1"),
    (["--seed", "-1"], "--seed must be in [0, 2**32)"),
    (["--eval-episodes", "-1"], "--eval-episodes must be >= 0"),
    (["--num-minibatches", "0"], "--num-minibatches must be >= 1"),
    (["--num-minibatches", "3"], "does not divide the batch size"),
    (["--num-minibatches", "64"], "leaves 1 sample per minibatch"),  # TINY's batch is 64 steps
    (["--replay-depth", "0"], "--replay-depth must be >= 1"),
    (["--total-timesteps", "10"], "smaller than one rollout"),
]
REFUSED_BY_R2VPO = [
    (["--delta", "nan"], "--delta must be finite"),
    (["--delta", "inf"], "--delta must be finite"),
    (["--delta", "0"], "--delta must be > 0"),
    (["--delta", "-0.1"], "--delta must be > 0"),
    (["--lambda-lr", "nan"], "--lambda-lr must be finite"),
    (["--lambda-lr", "-0.1"], "--lambda-lr must be >= 0"),
    (["--lambda-max", "inf"], "--lambda-max must be finite"),
    (["--lambda-init", "200"], "--lambda-init must be in [--lambda-min, --lambda-max]"),
    (["--lambda-min", "0.5", "--lambda-init", "0.1"], "--lambda-init must be in [--lambda-min, --lambda-max]"),
    (["--lambda-min", "-0.1"], "--lambda-min must be in [0, --lambda-max]"),
    (
        ["--dual-rule", "multiplicative", "--lambda-min", "0"],
        "--dual-rule multiplicative needs --lambda-min > 0 (got 0.0)",
    ),
]


@pytest.mark.parametrize(
    "module, flags, message",
    [(module, flags, message) for module in (ppo_baseline, r2vpo_continuous) for flags, message in REFUSED_BY_BOTH]
    + [(r2vpo_continuous, flags, message) for flags, message in REFUSED_BY_R2VPO],
)
def test_check_args_refuses_bad_flags_in_one_line(module, flags, message):
    with pytest.raises(SystemExit) as refusal:
        module.check_args(tyro.cli(module.Args, args=[*TINY, *flags]))
    text = str(refusal.value)
    assert text.startswith("error: ") and message in text and "\n" not in text


@pytest.mark.parametrize("module", [ppo_baseline, r2vpo_continuous])
def test_check_args_accepts_the_defaults_and_the_edges(module):
    for flags in (
        [],
        TINY,
        [*TINY, "--num-minibatches", "64", "--no-norm-adv"],
        ["--eval-episodes", "0", "--save-model"],
    ):
        module.check_args(tyro.cli(module.Args, args=flags))


@pytest.mark.parametrize("module", [ppo_baseline, r2vpo_continuous])
def test_cuda_without_cuda_is_refused(module, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="^error: --cuda, but torch finds no CUDA device"):
        module.check_args(tyro.cli(module.Args, args=["--cuda"]))


@pytest.mark.parametrize("module", [ppo_baseline, r2vpo_continuous])
def test_track_without_wandb_is_refused(module, monkeypatch):
    monkeypatch.setattr(module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit, match="^error: --track needs wandb"):
        module.check_args(tyro.cli(module.Args, args=["--track"]))


def test_variance_center_is_a_choice_the_parser_checks(capsys):
    with pytest.raises(SystemExit) as refusal:
        tyro.cli(r2vpo_continuous.Args, args=["--variance-center", "two"])
    assert refusal.value.code == 2 and "'mean', 'one'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "script, flags, message",
    [
        ("r2vpo_continuous.py", ["--delta", "nan"], "--delta must be finite (got nan)"),
        ("r2vpo_continuous.py", ["--env-id", "NoSuchEnv-v0"], "cannot make environment 'NoSuchEnv-v0'"),
        ("ppo_baseline.py", ["--env-id", "CartPole-v1"], "needs continuous (Box) actions"),
    ],
)
def test_bad_input_gives_one_line_error(script, flags, message, tmp_path):
    result = run_script(script, *TINY, *flags, cwd=tmp_path)
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert message in last_line and last_line.startswith("error:")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()  # failed before any run folder was made


# ---------------------------------------------------------------- saving, evaluating, tracking


@pytest.mark.parametrize("module", [ppo_baseline, r2vpo_continuous])
def test_evaluate_loads_statistics_on_the_cpu_and_weights_on_the_device(module, tmp_path, monkeypatch):
    """`--cuda --save-model`: the statistics must reach the environment as numpy arrays whatever the
    device. No GPU here, so the meta device stands in: like CUDA tensors, its tensors refuse .numpy()."""
    mean, var = torch.arange(11, dtype=torch.float64), torch.full((11,), 4.0, dtype=torch.float64)
    checkpoint = {"agent": module.Agent(11, 3).state_dict(), "obs_rms": (mean, var, torch.tensor(7.0)), "seed": 1}
    torch.save(checkpoint, tmp_path / "model")
    envs = module.make_vector_env("Hopper-v5", 1, False, "eval", gamma=None)
    monkeypatch.setattr(module, "make_vector_env", lambda *args, **kwargs: envs)  # keep a handle on them
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # copying weights into meta parameters is a no-op, and says so
        assert module.evaluate(str(tmp_path / "model"), "Hopper-v5", 0, "eval", torch.device("meta")) == []
    obs_norm = envs.envs[0]
    while not isinstance(obs_norm, gym.wrappers.NormalizeObservation):  # found without gymnasium's lookup
        obs_norm = obs_norm.env
    np.testing.assert_array_equal(obs_norm.obs_rms.mean, mean.numpy())
    np.testing.assert_array_equal(obs_norm.obs_rms.var, var.numpy())
    assert obs_norm.obs_rms.count == 7.0 and obs_norm.update_running_mean is False


def test_track_writes_an_offline_wandb_run_and_eval_episodes_zero_saves_only(tmp_path):
    """Both scripts share these lines (diff), so one is run; one run checks both, to keep tests fast."""
    wandb_dirs = {
        f"WANDB_{name}": str(tmp_path / name.lower()) for name in ("DIR", "CONFIG_DIR", "CACHE_DIR", "DATA_DIR")
    }
    env = {**os.environ, **wandb_dirs, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    flags = ["--track", "--wandb-project-name", "test", "--save-model", "--eval-episodes", "0"]
    result = run_script("ppo_baseline.py", *TINY, *flags, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    (run_file,) = glob.glob(str(tmp_path / "dir" / "wandb" / "offline-run-*" / "run-*.wandb"))
    data = Path(run_file).read_bytes()
    assert b"charts/episodic_return" in data and b"losses/value_loss" in data  # synced from tensorboard
    assert b"exp_name" in data  # the config, vars(args)
    # --eval-episodes 0: the model is saved, and nothing is evaluated (once: "nan over 0 episodes")
    assert glob.glob(str(tmp_path / "runs" / "*" / "*.cleanrl_model"))
    assert "eval:" not in result.stdout and "nan" not in result.stdout
    assert "eval/episodic_return" not in read_scalars(tmp_path)


def test_speed_benchmark_runs_end_to_end(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmark.speed",
            "--num-steps",
            "64",
            "--iterations",
            "1",
            "--warmup-iterations",
            "1",
            "--env-steps",
            "200",
            "--repeats",
            "2",
            "--baseline-dir",
            str(ROOT),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for row in (
        "| env-only |",
        "| ppo |",
        "| r2vpo |",
        "| ppo (baseline) |",
        "r2vpo / ppo wall time per iteration",
        "ppo speed-up over",
    ):
        assert row in result.stdout


def test_speed_benchmark_actor_cost():
    result = subprocess.run(
        [sys.executable, "-m", "benchmark.speed", "--actor-cost", "--num-steps", "64", "--repeats", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    match = re.search(r"torch actor (\d+) us/step, numpy actor (\d+) us/step", result.stdout)
    assert match and int(match.group(1)) > 0 and int(match.group(2)) > 0, result.stdout


def test_capture_video_headless(tmp_path):
    env = {**os.environ, "MUJOCO_GL": "egl"}
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "ppo_baseline.py"),
            "--capture-video",
            "--total-timesteps",
            "64",
            "--num-steps",
            "64",
            "--num-minibatches",
            "4",
            "--update-epochs",
            "1",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert glob.glob(str(tmp_path / "videos" / "*" / "*.mp4"))
