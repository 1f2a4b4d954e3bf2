"""Task variants for the benchmark: delayed (sparse) rewards and changing dynamics.

Importing this module registers five gymnasium ids. The training scripts use them unchanged
through gymnasium's "module:EnvId" form, which imports this module first:

    python r2vpo_continuous.py --env-id benchmark.envs:SparseHopper-v5

(the repository root must be on PYTHONPATH, which `benchmark/run.py` does for its children).

| id                        | base env         | what changes                                          |
|---------------------------|------------------|-------------------------------------------------------|
| SparseHopper-v5           | Hopper-v5        | reward paid every `delay` steps and at episode end    |
| SparseWalker2d-v5         | Walker2d-v5      | same                                                  |
| SparseHalfCheetah-v5      | HalfCheetah-v5   | same                                                  |
| DynamicHopper-v5          | Hopper-v5        | gravity varies sinusoidally with the episode index    |
| DynamicWalker2d-v5        | Walker2d-v5      | same                                                  |

Keyword arguments of `gym.make` go to the variant first (`delay`; `parameter`, `amplitude`,
`period`); all others (e.g. `render_mode`, `forward_reward_weight`) go to the base env:

    gym.make("benchmark.envs:SparseHopper-v5", delay=10, render_mode="rgb_array")

Wrapper order: the base env is built with `gym.make(base_id)`, so it carries the base env's
TimeLimit (1000 steps); the variant wrapper sits *outside* it so that it sees truncation and can
pay the last accumulated reward on the final step. The variant ids are registered without
`max_episode_steps`, so gymnasium adds no second TimeLimit: truncation happens exactly once, at
step 1000. Episode returns (sum of rewards) are the same numbers as for the dense base task,
so the sparse and dense rows of a results table are directly comparable.
"""

import math

import gymnasium as gym


class DelayedRewardWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Accumulate the reward and pay it out every `delay` steps and on the episode's last step.

    Between payouts the reward is exactly 0.0. The payout at step t is the sum of the dense rewards
    since the previous payout, so the sum over an episode equals the dense return for the same
    actions (up to float rounding). The last step of an episode (termination *or* truncation)
    always pays what is left. The dense reward of each step is kept in `info["dense_reward"]`.
    """

    def __init__(self, env: gym.Env, delay: int = 20):
        if int(delay) != delay or delay < 1:
            raise ValueError(f"delay must be a positive integer, got {delay!r}")
        gym.utils.RecordConstructorArgs.__init__(self, delay=delay)
        gym.Wrapper.__init__(self, env)
        self.delay = int(delay)
        self.accumulated_reward = 0.0
        self.steps_since_payout = 0

    def reset(self, **kwargs):
        self.accumulated_reward = 0.0
        self.steps_since_payout = 0
        return self.env.reset(**kwargs)

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        self.accumulated_reward += float(reward)
        self.steps_since_payout += 1
        info["dense_reward"] = float(reward)
        if terminated or truncated or self.steps_since_payout >= self.delay:
            paid_reward, self.accumulated_reward, self.steps_since_payout = self.accumulated_reward, 0.0, 0
        else:
            paid_reward = 0.0
        return observation, paid_reward, terminated, truncated, info


class ScheduledPhysicsWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Change one physical parameter of a MuJoCo env at every reset, on a smooth schedule.

    At the start of episode k (k = 0, 1, 2, ... counted by this wrapper instance) the parameter is

        value_k = nominal * (1 + amplitude * sin(2 * pi * k / period))

    so episode 0 sees the nominal physics, and the task drifts smoothly through +-amplitude over
    `period` episodes, again and again, while training goes on. The agent does not observe the
    parameter (it is a hidden, non-stationary task). Supported parameters:
      - "gravity": the whole gravity vector `model.opt.gravity` (default);
      - "torso_mass": mass and inertia of the body named "torso" (Hopper, Walker2d).
    The scale of the current episode is reported in `info["physics_scale"]` by reset and step.
    """

    parameters = ("gravity", "torso_mass")

    def __init__(self, env: gym.Env, parameter: str = "gravity", amplitude: float = 0.3, period: float = 100.0):
        if parameter not in self.parameters:
            raise ValueError(f"unknown physics parameter {parameter!r}; choose one of {self.parameters}")
        if not 0.0 <= amplitude < 1.0:
            raise ValueError(f"amplitude must be in [0, 1), got {amplitude!r}")
        if period <= 0:
            raise ValueError(f"period must be > 0 episodes, got {period!r}")
        gym.utils.RecordConstructorArgs.__init__(self, parameter=parameter, amplitude=amplitude, period=period)
        gym.Wrapper.__init__(self, env)
        self.parameter, self.amplitude, self.period = parameter, float(amplitude), float(period)
        model = env.unwrapped.model  # the MuJoCo model; edits take effect at the next mj_step
        # Nominal values are copied once, so the schedule never compounds its own changes.
        if parameter == "gravity":
            self.nominal = model.opt.gravity.copy()
        else:
            self.torso_id = model.body("torso").id
            self.nominal = (float(model.body_mass[self.torso_id]), model.body_inertia[self.torso_id].copy())
        self.episode_index = -1  # incremented by every reset, so the first episode is episode 0
        self.physics_scale = 1.0

    def scale_at(self, episode_index: int) -> float:
        """Multiplier of the nominal value for a given episode index (the schedule)."""
        return 1.0 + self.amplitude * math.sin(2.0 * math.pi * episode_index / self.period)

    def reset(self, **kwargs):
        self.episode_index += 1
        self.physics_scale = self.scale_at(self.episode_index)
        model = self.env.unwrapped.model
        if self.parameter == "gravity":
            model.opt.gravity[:] = self.nominal * self.physics_scale
        else:
            nominal_mass, nominal_inertia = self.nominal
            model.body_mass[self.torso_id] = nominal_mass * self.physics_scale
            model.body_inertia[self.torso_id] = nominal_inertia * self.physics_scale
        observation, info = self.env.reset(**kwargs)
        info["physics_scale"] = self.physics_scale
        return observation, info

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        info["physics_scale"] = self.physics_scale
        return observation, reward, terminated, truncated, info


def make_sparse_env(base_id: str, delay: int = 20, **base_kwargs) -> gym.Env:
    """Entry point of the Sparse* ids: base env (with its TimeLimit) inside a DelayedRewardWrapper."""
    env = gym.make(base_id, disable_env_checker=True, **base_kwargs)
    return DelayedRewardWrapper(env, delay=delay)


def make_dynamic_env(
    base_id: str, parameter: str = "gravity", amplitude: float = 0.3, period: float = 100.0, **base_kwargs
) -> gym.Env:
    """Entry point of the Dynamic* ids: base env (with its TimeLimit) inside a ScheduledPhysicsWrapper."""
    env = gym.make(base_id, disable_env_checker=True, **base_kwargs)
    return ScheduledPhysicsWrapper(env, parameter=parameter, amplitude=amplitude, period=period)


# Defaults of the variants (documented here, overridable as gym.make kwargs).
SPARSE_DEFAULTS = {"delay": 20}
DYNAMIC_DEFAULTS = {"parameter": "gravity", "amplitude": 0.3, "period": 100.0}

VARIANTS = {
    "SparseHopper-v5": ("benchmark.envs:make_sparse_env", "Hopper-v5", SPARSE_DEFAULTS),
    "SparseWalker2d-v5": ("benchmark.envs:make_sparse_env", "Walker2d-v5", SPARSE_DEFAULTS),
    "SparseHalfCheetah-v5": ("benchmark.envs:make_sparse_env", "HalfCheetah-v5", SPARSE_DEFAULTS),
    "DynamicHopper-v5": ("benchmark.envs:make_dynamic_env", "Hopper-v5", DYNAMIC_DEFAULTS),
    "DynamicWalker2d-v5": ("benchmark.envs:make_dynamic_env", "Walker2d-v5", DYNAMIC_DEFAULTS),
}

for _env_id, (_entry_point, _base_id, _defaults) in VARIANTS.items():
    if _env_id not in gym.registry:  # registering is idempotent across re-imports
        # max_episode_steps=None: the base env's own TimeLimit (inside the wrapper) is the only one.
        gym.register(
            id=_env_id,
            entry_point=_entry_point,
            max_episode_steps=None,
            kwargs={"base_id": _base_id, **_defaults},
        )
