"""Tests of the benchmark task variants (benchmark/envs.py): delayed rewards and changing physics."""

import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import benchmark.envs  # noqa: E402,F401  (registers the ids)


def play(env, actions, seed=0):
    """Rewards, and (terminated, truncated) of the last step, of one episode with fixed actions."""
    env.reset(seed=seed)
    rewards = []
    for action in actions:
        _, reward, terminated, truncated, _ = env.step(action)
        rewards.append(float(reward))
        if terminated or truncated:
            return rewards, (terminated, truncated)
    return rewards, (False, False)


def wrapper_chain(env):
    chain = [env]
    while hasattr(chain[-1], "env"):
        chain.append(chain[-1].env)
    return chain


@pytest.mark.parametrize("base_id", ["Hopper-v5", "Walker2d-v5"])
def test_sparse_reward_sums_to_dense_return_and_is_zero_between_payouts(base_id):
    actions = np.random.default_rng(0).uniform(-1, 1, size=(1000, gym.make(base_id).action_space.shape[0]))
    dense, dense_end = play(gym.make(base_id), actions)
    sparse, sparse_end = play(gym.make(f"benchmark.envs:Sparse{base_id}"), actions)
    assert len(dense) == len(sparse) > 20  # same actions, same seed: same trajectory and same ending
    assert dense_end == sparse_end
    assert sum(sparse) == pytest.approx(sum(dense), rel=1e-9, abs=1e-9)
    for step, reward in enumerate(sparse, start=1):
        if step % 20 == 0:  # each payout is the dense reward of its own 20-step window
            assert reward == pytest.approx(sum(dense[step - 20 : step]))
        elif step == len(sparse):  # the last step pays what is left
            assert reward == pytest.approx(sum(dense[step - step % 20 : step]))
        else:
            assert reward == 0.0


def test_sparse_truncates_once_at_1000_and_pays_the_remainder():
    env = gym.make("benchmark.envs:SparseHalfCheetah-v5", delay=30)  # 1000 is not a multiple of 30
    assert sum(isinstance(e, gym.wrappers.TimeLimit) for e in wrapper_chain(env)) == 1
    env.reset(seed=0)
    rewards, dense_rewards = [], []
    for step in range(1, 1001):
        _, reward, terminated, truncated, info = env.step(env.action_space.sample())
        rewards.append(reward)
        dense_rewards.append(info["dense_reward"])
        assert not terminated
        assert truncated == (step == 1000)
    assert rewards[-1] == pytest.approx(sum(dense_rewards[990:]))  # 10 steps after the payout at 990
    assert sum(rewards) == pytest.approx(sum(dense_rewards))
    assert env.spec.max_episode_steps == 1000


def test_kwargs_pass_through_gym_make():
    env = gym.make("benchmark.envs:SparseHopper-v5", delay=7, forward_reward_weight=2.0)
    assert env.get_wrapper_attr("delay") == 7
    assert env.unwrapped._forward_reward_weight == 2.0  # a base-env kwarg reaches Hopper
    env = gym.make("benchmark.envs:DynamicWalker2d-v5", parameter="torso_mass", amplitude=0.1, period=8)
    assert (env.get_wrapper_attr("parameter"), env.get_wrapper_attr("amplitude"), env.get_wrapper_attr("period")) == (
        "torso_mass",
        0.1,
        8.0,
    )
    with pytest.raises(ValueError, match="delay"):
        gym.make("benchmark.envs:SparseHopper-v5", delay=0)
    with pytest.raises(ValueError, match="unknown physics parameter"):
        gym.make("benchmark.envs:DynamicHopper-v5", parameter="wind")


def test_dynamic_gravity_follows_the_schedule_between_episodes():
    env = gym.make("benchmark.envs:DynamicHopper-v5", period=8)
    model = env.unwrapped.model
    nominal = model.opt.gravity.copy()
    gravities, scales = [], []
    for episode in range(8):
        _, info = env.reset(seed=episode)
        gravities.append(model.opt.gravity[2])
        scales.append(info["physics_scale"])
        _, _, _, _, info = env.step(env.action_space.sample())
        assert info["physics_scale"] == scales[-1]
    expected = [1 + 0.3 * np.sin(2 * np.pi * k / 8) for k in range(8)]
    np.testing.assert_allclose(scales, expected)
    np.testing.assert_allclose(gravities, nominal[2] * np.array(expected))
    assert len(set(np.round(gravities, 6))) > 4  # the physics differ between episodes
    assert max(abs(s - 1) for s in scales) == pytest.approx(0.3)  # within +-30%, peak reached


def test_dynamic_torso_mass_changes_and_changes_the_motion():
    env = gym.make("benchmark.envs:DynamicHopper-v5", parameter="torso_mass", period=4)
    model = env.unwrapped.model
    torso = model.body("torso").id
    masses, heights = [], []
    for episode in range(3):
        env.reset(seed=0)  # same initial state every episode: only the physics differ
        masses.append(float(model.body_mass[torso]))
        for _ in range(20):
            observation, *_ = env.step(np.zeros(env.action_space.shape))
        heights.append(float(env.unwrapped.data.qpos[1]))
    assert masses[1] == pytest.approx(masses[0] * 1.3) and masses[2] == pytest.approx(masses[0])
    assert heights[0] == pytest.approx(heights[2])  # same physics, same motion
    assert heights[1] != pytest.approx(heights[0])  # heavier torso, different motion


def test_module_path_id_works_from_any_directory(tmp_path):
    code = "import gymnasium as gym; env = gym.make('benchmark.envs:SparseHopper-v5'); env.reset(seed=0); print(env.spec.id)"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    output = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    assert output.stdout.strip() == "SparseHopper-v5"
