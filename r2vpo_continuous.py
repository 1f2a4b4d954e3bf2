"""R2VPO (Ratio-Variance Regularized Policy Optimization) for continuous actions.

Luo et al., ICML 2026, arXiv 2605.26784 (LLM precursor: arXiv 2601.03320). Only the abstracts are
public: each choice made here where the paper is not is marked [choice] and is a flag.
This is `ppo_baseline.py` with the clipped surrogate replaced: `diff` the two to see the method.

PPO's clip zeroes the gradient of every sample whose ratio r = pi(a|s)/mu(a|s) left [1-eps, 1+eps],
often the high-advantage ones. R2VPO drops the clip and constrains the ratio variance instead:
    maximise J = mean_k(r_k A_k)   subject to   V = mean_k((r_k - 1)^2) <= delta
    primal, each optimiser step:  minimise -J + lambda * V   (+ PPO's value and entropy terms)
    dual, once per iteration:     lambda <- clip(lambda * clip(Vbar / delta, 1/2, 2), lambda_min, lambda_max)
                                  (Vbar: the last epoch's mean V; `--dual-rule additive`, the first version:
                                  lambda + lambda_lr * (V - delta) / delta after each step; or bounded)
Under mu, E[r] = 1 and Var[r] = chi^2(pi || mu) ~ 2 KL, so V <= delta is locally a KL trust region
of radius delta/2 (delta 0.02 ~ PPO's usual approx_kl 0.01); ESS/N = mean(r)^2/mean(r^2) = 1/(1+V).
Soft brake: d(-J + lambda V)/dlogp_k = -(1/N) r_k (A_k - 2 lambda (r_k - c)), c = 1 (with c = mean r the
centre's own term vanishes since deviations sum to 0). No sample is zeroed: its push fades as its
ratio runs ahead and stops near r_k = c + A_k / (2 lambda), so the trust region widens with |A|,
and stale replayed samples (`--replay-depth`) are down-weighted instead of discarded.
[choice] V is the second moment of the ratio around 1 over the minibatch, mean((r - 1)^2): E_mu[r] = 1,
  and mean((r-1)^2) = Var(r) + (mean r - 1)^2 keeps the common drift of all ratios that the
  first version's minibatch variance (`--variance-center mean`) drops: its gradient sums to zero,
  so nothing pulls a common drift back.
[choice] The dual step is multiplicative, once per iteration, on the last epoch's mean V: lambda
  times clip(V / delta, 1/2, 2) (PPO's adaptive-KL rule made continuous), projected onto
  [`--lambda-min`, `--lambda-max`]; lambda persists across iterations. The first version's additive
  step (`--dual-rule additive`, after every optimiser step, normalised by delta so `--lambda-lr` is
  scale-free) is unbounded upwards and at most lambda_lr downwards, so one spike of V can lock
  lambda high; `bounded` clips what one such step does (see `dual_update`).
[choice] The log-ratio is clamped to [-20, 20] before exp, as a numerical guard only.
[choice] Defaults delta 0.05, lambda_lr 0.5 won a 1-seed, 100k-step screen on tasks outside the
  results tables (control-sweep); lambda_init 1 and lambda_max 100 were not varied. The centre 1 and
  the multiplicative step with floor 0.01 won the revision's screen on seeds no table reports
  (benchmark/README.md); the first version is `--variance-center mean --dual-rule additive
  --lambda-min 0`.

Everything but the policy loss follows CleanRL's `ppo_continuous_action` (its defaults, its
separate 64-64 tanh actor and critic, its observation and reward normalisation), on gymnasium 1.x
and MuJoCo v5. Beyond it:
- time-limit truncation is bootstrapped with the value of the final observation instead of
  being treated as a termination;
- `--save-model` stores the observation-normalisation statistics with the weights, and the
  evaluation reloads both (without them a saved policy sees unnormalised inputs and collapses);
- `--replay-depth K` also trains on the previous K-1 rollouts, with their stored behaviour
  log-probs and with values and GAE recomputed by the current critic.

Run:
    python r2vpo_continuous.py --env-id Hopper-v5 --total-timesteps 1000000 --seed 1
    tensorboard --logdir runs
"""

import importlib.util
import math
import os
import random
import time
from collections import deque
from dataclasses import dataclass
from typing import Literal, NamedTuple

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim
import tyro
from torch.utils.tensorboard import SummaryWriter


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (the run folder is runs/{env_id}__{exp_name}__{seed}__{time})"""
    seed: int = 1
    """seed of the experiment (python, numpy, torch and the environments)"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = False
    """if toggled, use CUDA, refused where there is none (64-64 MLPs with one env are faster on the CPU)"""
    track: bool = False
    """if toggled, track the run with Weights & Biases (`wandb`), which syncs the tensorboard logs"""
    wandb_project_name: str = "r2vpo"
    """the Weights & Biases project"""
    wandb_entity: str | None = None
    """the Weights & Biases entity, a user or team (None: your default entity)"""
    torch_threads: int = 1
    """torch CPU threads (one is as fast as two for these small networks)"""
    capture_video: bool = False
    """whether to record videos of the agent to `videos/` (headless: set MUJOCO_GL=egl)"""
    save_model: bool = False
    """whether to save the agent and its observation statistics, then evaluate the saved model"""
    eval_episodes: int = 10
    """number of deterministic evaluation episodes of the saved model (0: save without evaluating)"""

    # Algorithm specific arguments
    env_id: str = "Hopper-v5"
    """the id of the environment (any gymnasium id with a Box action space, or "module:Id")"""
    total_timesteps: int = 1000000
    """total timesteps of the experiment"""
    learning_rate: float = 3e-4
    """the learning rate of the optimizer"""
    num_envs: int = 1
    """the number of parallel game environments"""
    num_steps: int = 2048
    """the number of steps to run in each environment per policy rollout"""
    anneal_lr: bool = True
    """toggle learning rate annealing for policy and value networks"""
    gamma: float = 0.99
    """the discount factor gamma"""
    gae_lambda: float = 0.95
    """the lambda for the general advantage estimation"""
    num_minibatches: int = 32
    """the number of mini-batches per epoch"""
    update_epochs: int = 10
    """the K epochs to update the policy"""
    norm_adv: bool = True
    """toggles advantages normalization (per minibatch)"""
    clip_coef: float = 0.2
    """the |r-1| threshold of would_clip_frac, and the value-loss clip unless --vf-clip-coef (no policy clip)"""
    clip_vloss: bool = True
    """toggles whether or not to use a clipped loss for the value function, as per the paper"""
    vf_clip_coef: float | None = None
    """the value-loss clipping coefficient (None: --clip-coef, CleanRL's one coefficient for both)"""
    ent_coef: float = 0.0
    """coefficient of the entropy"""
    vf_coef: float = 0.5
    """coefficient of the value function"""
    max_grad_norm: float = 0.5
    """the maximum norm for the gradient clipping"""
    target_kl: float | None = None
    """the target KL divergence threshold for early stopping (None: off)"""
    replay_depth: int = 1
    """train on the last K rollouts (1 = plain on-policy); older ones keep their behaviour log-probs"""
    delta: float = 0.05
    """the ratio-variance budget: Var(r) <= delta, locally a KL trust region of radius delta/2"""
    lambda_init: float = 1.0
    """initial Lagrange multiplier"""
    lambda_lr: float = 0.5
    """dual step size on the normalised violation (V - delta) / delta"""
    lambda_max: float = 100.0
    """cap of the Lagrange multiplier (keeps one overshoot from freezing the policy)"""
    lambda_min: float = 0.01
    """floor of the Lagrange multiplier (> 0 for the multiplicative rule: a product cannot leave 0)"""
    dual_rule: Literal["additive", "bounded", "multiplicative"] = "multiplicative"
    """the dual step (see `dual_update`): additive and bounded after every optimiser step, multiplicative once per iteration"""
    variance_center: Literal["mean", "one"] = "one"
    """centre of the ratio variance: the minibatch mean of r, or one (E[r] under the behaviour policy)"""

    # to be filled in runtime
    batch_size: int = 0
    """the batch size of one rollout (computed in runtime)"""
    minibatch_size: int = 0
    """the mini-batch size of one rollout (computed in runtime; replay makes it up to K times larger: charts/minibatch_size)"""
    num_iterations: int = 0
    """the number of iterations (computed in runtime)"""


def make_env(env_id, idx, capture_video, run_name, gamma):
    def thunk():
        if capture_video and idx == 0:
            env = gym.make(env_id, render_mode="rgb_array")
            env = gym.wrappers.RecordVideo(env, f"videos/{run_name}")
        else:
            env = gym.make(env_id)
        if not isinstance(env.action_space, gym.spaces.Box):
            raise SystemExit(
                f"error: {env_id} has {env.action_space} actions; this script needs continuous (Box) actions"
            )
        env = gym.wrappers.FlattenObservation(env)  # deal with dm_control's Dict observation space
        env = gym.wrappers.RecordEpisodeStatistics(env)
        env = gym.wrappers.ClipAction(env)
        env = gym.wrappers.NormalizeObservation(env)
        env = gym.wrappers.TransformObservation(env, lambda obs: np.clip(obs, -10, 10), env.observation_space)
        if gamma is not None:  # evaluation reports raw returns and needs no reward scaling
            env = gym.wrappers.NormalizeReward(env, gamma=gamma)
            env = gym.wrappers.TransformReward(env, lambda reward: np.clip(reward, -10, 10))
        return env

    return thunk


def make_vector_env(env_id, num_envs, capture_video, run_name, gamma):
    """Vector env with same-step autoreset: the classic GAE bookkeeping, final obs in infos."""
    try:
        envs = gym.vector.SyncVectorEnv(
            [make_env(env_id, i, capture_video, run_name, gamma) for i in range(num_envs)],
            autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
        )
    except (gym.error.Error, ModuleNotFoundError) as error:
        raise SystemExit(f"error: cannot make environment {env_id!r}: {error}") from None
    return envs


def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    def __init__(self, obs_dim, action_dim):
        super().__init__()
        self.critic = nn.Sequential(
            layer_init(nn.Linear(obs_dim, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, 1), std=1.0),
        )
        self.actor_mean = nn.Sequential(
            layer_init(nn.Linear(obs_dim, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, action_dim), std=0.01),
        )
        self.actor_logstd = nn.Parameter(torch.zeros(1, action_dim))

    def get_value(self, x):
        return self.critic(x).squeeze(-1)

    def numpy_actor(self):
        """A NumPy copy of the policy, sample_action(obs, rng), to act in one rollout: cheaper per step than torch."""

        def to_numpy(tensor):  # a copy: the updates that follow cannot change this rollout's policy
            return tensor.detach().cpu().numpy().copy()

        weights = [
            (to_numpy(layer.weight.T), to_numpy(layer.bias))
            for layer in self.actor_mean
            if isinstance(layer, nn.Linear)
        ]
        std = to_numpy(self.actor_logstd.exp())

        def sample_action(obs, rng):  # mirrors actor_mean (Linear, Tanh, Linear, Tanh, Linear): change both
            hidden = obs
            for weight, bias in weights[:-1]:
                hidden = np.tanh(hidden @ weight + bias)
            action_mean = hidden @ weights[-1][0] + weights[-1][1]
            return action_mean + std * rng.standard_normal(action_mean.shape, dtype=np.float32)

        return sample_action

    def get_logprob_entropy(self, x, action):
        """Log-probs of `action` and entropy of the diagonal Gaussian, written out (cheaper than a Normal object)."""
        action_mean = self.actor_mean(x)
        log_std = self.actor_logstd
        z = (action - action_mean) / log_std.exp()
        log_prob = -0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)
        entropy = (log_std + 0.5 + 0.5 * math.log(2 * math.pi)).expand_as(action_mean)
        return log_prob.sum(-1), entropy.sum(-1)


class Rollout(NamedTuple):
    """One rollout as (num_steps, num_envs, ...) tensors, kept in the replay buffer."""

    obs: torch.Tensor
    next_obs: torch.Tensor  # the state reached by each step (the final observation where an episode ended)
    actions: torch.Tensor
    rewards: torch.Tensor
    terminations: torch.Tensor
    dones: torch.Tensor
    behavior_logprobs: torch.Tensor | None = None  # log mu(a|s) of the policy that acted


def compute_gae(rewards, values, next_values, terminations, dones, gamma, gae_lambda):
    """Generalised advantage estimation over a (num_steps, num_envs) rollout.

    values[t] = V(s_t); next_values[t] = V(s'_t), the value of the state reached by step t, which
    for a step that ended an episode is the final observation, not the reset one. A termination
    bootstraps with 0 (terminations[t] = 1); a time-limit truncation bootstraps with V(final obs).
    dones[t] = 1 (terminated or truncated) cuts the trace so no advantage leaks across episodes:
        delta_t = r_t + gamma * (1 - terminated_t) * V(s'_t) - V(s_t)
        A_t     = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}
    Returns (advantages, returns = advantages + values).
    """
    deltas = rewards + gamma * (1.0 - terminations) * next_values - values
    discounts = gamma * gae_lambda * (1.0 - dones)
    advantages, lastgaelam = [], torch.zeros_like(rewards[0])
    for delta, discount in zip(reversed(deltas.unbind()), reversed(discounts.unbind())):
        lastgaelam = delta + discount * lastgaelam
        advantages.append(lastgaelam)
    advantages = torch.stack(advantages[::-1])
    return advantages, advantages + values


def r2vpo_policy_loss(new_logprobs, behavior_logprobs, advantages, lagrange_multiplier, center="mean"):
    """R2VPO's primal loss -mean(r A) + lambda * V (lambda a constant; see the module docstring).

    Returns (loss, ratio_variance), the variance detached for logging and the dual step.
    """
    ratio = (new_logprobs - behavior_logprobs).clamp(-20.0, 20.0).exp()  # guard against overflow only
    if center == "mean":
        ratio_variance = ratio.var(unbiased=False)  # population variance (ddof=0)
    else:
        ratio_variance = ((ratio - 1.0) ** 2).mean()  # second moment around E_mu[r] = 1
    loss = -(ratio * advantages).mean() + lagrange_multiplier * ratio_variance
    return loss, ratio_variance.detach()


def dual_update(lagrange_multiplier, ratio_variance, delta, rule, lr, lambda_min, lambda_max):
    """One dual step on the violation of V <= delta, projected onto [lambda_min, lambda_max].

    additive (v1), after every optimiser step on its minibatch's V: lambda + lr * (V - delta) / delta.
        Unbounded upwards, at most lr downwards: one spike of V can lock lambda near its cap.
    bounded, the same, with (V - delta) / delta clipped to [-1, 1]: one minibatch moves lambda by <= lr.
    multiplicative, once per iteration on the mean V of its last epoch: lambda * clip(V / delta, 1/2, 2),
        PPO's adaptive-KL rule (x2 or /2) made continuous; lr is not used. Needs lambda_min > 0.
    """
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


def evaluate(model_path, env_id, eval_episodes, run_name, device, capture_video=False):
    """Reload the saved agent and observation statistics; run the deterministic mean action."""
    envs = make_vector_env(env_id, 1, capture_video, f"{run_name}-eval", gamma=None)
    checkpoint = torch.load(model_path, map_location="cpu")  # statistics to numpy here, weights to device below
    obs_rms = envs.envs[0].get_wrapper_attr("obs_rms")  # NormalizeObservation's running statistics
    obs_rms.mean, obs_rms.var, obs_rms.count = (x.numpy() for x in checkpoint["obs_rms"])
    envs.envs[0].set_wrapper_attr("update_running_mean", False)  # frozen (no NormalizeReward in this stack)
    agent = Agent(envs.single_observation_space.shape[0], envs.single_action_space.shape[0]).to(device)
    agent.load_state_dict(checkpoint["agent"])
    agent.eval()

    episodic_returns = []
    obs, _ = envs.reset(seed=checkpoint["seed"] + 10_000)  # episodes unseen in training
    while len(episodic_returns) < eval_episodes:
        with torch.inference_mode():
            action = agent.actor_mean(torch.as_tensor(obs, device=device))
        obs, _, _, _, infos = envs.step(action.cpu().numpy())
        if "final_info" in infos and infos["final_info"]["_episode"][0]:
            episodic_returns.append(float(infos["final_info"]["episode"]["r"][0]))
    envs.close()
    return episodic_returns


def check_args(args: Args) -> None:
    """Refuse, in one line and before any environment or run folder exists, a setting that cannot train."""
    for name, value in vars(args).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise SystemExit(f"error: --{name.replace('_', '-')} must be finite (got {value})")
    ranges = {  # flag: (holds, what it must be); a NaN fails every comparison
        "seed": (0 <= args.seed < 2**32, "in [0, 2**32)"),
        "torch_threads": (args.torch_threads >= 1, ">= 1"),
        "eval_episodes": (args.eval_episodes >= 0, ">= 0 (0: save without evaluating)"),
        "learning_rate": (args.learning_rate > 0, "> 0"),
        "num_envs": (args.num_envs >= 1, ">= 1"),
        "num_steps": (args.num_steps >= 1, ">= 1"),
        "gamma": (0 < args.gamma <= 1, "in (0, 1]"),
        "gae_lambda": (0 <= args.gae_lambda <= 1, "in [0, 1]"),
        "num_minibatches": (args.num_minibatches >= 1, ">= 1"),
        "update_epochs": (args.update_epochs >= 1, ">= 1"),
        "clip_coef": (args.clip_coef > 0, "> 0"),
        "vf_clip_coef": (args.vf_clip_coef is None or args.vf_clip_coef > 0, "> 0 (or None: --clip-coef)"),
        "ent_coef": (args.ent_coef >= 0, ">= 0"),
        "vf_coef": (args.vf_coef >= 0, ">= 0"),
        "max_grad_norm": (args.max_grad_norm > 0, "> 0"),
        "target_kl": (args.target_kl is None or args.target_kl > 0, "> 0 (or None: off)"),
        "replay_depth": (args.replay_depth >= 1, ">= 1 (1 = on-policy)"),
        "delta": (args.delta > 0, "> 0"),
        "lambda_lr": (args.lambda_lr >= 0, ">= 0"),
        "lambda_max": (args.lambda_max >= 0, ">= 0"),
        "lambda_min": (0 <= args.lambda_min <= args.lambda_max, "in [0, --lambda-max]"),
        "lambda_init": (args.lambda_min <= args.lambda_init <= args.lambda_max, "in [--lambda-min, --lambda-max]"),
    }
    for name, (holds, requirement) in ranges.items():
        if not holds:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be {requirement} (got {getattr(args, name)})")
    if args.dual_rule == "multiplicative" and args.lambda_min <= 0:
        raise SystemExit(f"error: --dual-rule multiplicative needs --lambda-min > 0 (got {args.lambda_min})")
    batch_size = args.num_envs * args.num_steps
    if batch_size % args.num_minibatches != 0:
        raise SystemExit(
            f"error: --num-minibatches {args.num_minibatches} does not divide the batch size "
            f"{batch_size} (= num_envs * num_steps)"
        )
    if args.norm_adv and batch_size // args.num_minibatches < 2:  # the std of one advantage is NaN
        raise SystemExit(
            f"error: --num-minibatches {args.num_minibatches} leaves 1 sample per minibatch; normalising "
            "advantages needs >= 2 (use fewer minibatches, or --no-norm-adv)"
        )
    if args.total_timesteps < batch_size:
        raise SystemExit(f"error: --total-timesteps {args.total_timesteps} is smaller than one rollout ({batch_size})")
    if args.cuda and not torch.cuda.is_available():
        raise SystemExit("error: --cuda, but torch finds no CUDA device (torch.cuda.is_available() is False)")
    if args.track and importlib.util.find_spec("wandb") is None:
        raise SystemExit("error: --track needs wandb (pip install wandb)")


def main():
    args = tyro.cli(Args)
    check_args(args)
    args.batch_size = int(args.num_envs * args.num_steps)
    args.minibatch_size = int(args.batch_size // args.num_minibatches)
    args.num_iterations = args.total_timesteps // args.batch_size
    args.vf_clip_coef = args.clip_coef if args.vf_clip_coef is None else args.vf_clip_coef
    run_name = f"{args.env_id.replace('/', '_')}__{args.exp_name}__{args.seed}__{int(time.time())}"

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)  # the rollout's action noise
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(args.torch_threads)
    device = torch.device("cuda" if args.cuda else "cpu")

    # env setup
    envs = make_vector_env(args.env_id, args.num_envs, args.capture_video, run_name, args.gamma)
    obs_dim = envs.single_observation_space.shape[0]
    action_dim = envs.single_action_space.shape[0]
    if args.track:
        import wandb  # optional: imported only when tracking

        wandb.init(
            project=args.wandb_project_name,
            entity=args.wandb_entity,
            sync_tensorboard=True,  # the tensorboard tags below reach wandb as they are
            config=vars(args),
            name=run_name,
            monitor_gym=False,  # its RecordVideo patch crashes on gymnasium 1.x (wandb issue 10339)
            save_code=True,
        )
    writer = SummaryWriter(f"runs/{run_name}")
    writer.add_text(
        "hyperparameters",
        "|param|value|\n|-|-|\n%s" % ("\n".join([f"|{key}|{value}|" for key, value in vars(args).items()])),
    )

    agent = Agent(obs_dim, action_dim).to(device)
    # fused: one kernel for every tensor (same learning as the default loop: benchmark/results/speed)
    optimizer = optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)

    # Rollout storage (numpy: a row write costs a fraction of a torch index_put). next_obs_buf[t] is
    # the state reached by step t, the final observation when the episode ended there.
    obs = np.zeros((args.num_steps, args.num_envs, obs_dim), dtype=np.float32)
    next_obs_buf = np.zeros((args.num_steps, args.num_envs, obs_dim), dtype=np.float32)
    actions = np.zeros((args.num_steps, args.num_envs, action_dim), dtype=np.float32)
    rewards = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)
    terminations = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)
    dones = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)
    replay = deque(maxlen=args.replay_depth)  # FIFO of the last K rollouts
    lagrange_multiplier = args.lambda_init  # persists across iterations

    # TRY NOT TO MODIFY: start the game
    global_step = 0
    start_time = time.time()
    next_obs, _ = envs.reset(seed=args.seed)
    envs.action_space.seed(args.seed)

    for iteration in range(1, args.num_iterations + 1):
        iteration_start = time.time()
        # Annealing the rate if instructed to do so.
        if args.anneal_lr:
            frac = 1.0 - (iteration - 1.0) / args.num_iterations
            lrnow = frac * args.learning_rate
            optimizer.param_groups[0]["lr"] = lrnow

        sample_action = agent.numpy_actor()  # the policy as of this iteration, in NumPy
        for step in range(0, args.num_steps):
            global_step += args.num_envs
            obs[step] = next_obs

            # ALGO LOGIC: action logic
            action = sample_action(next_obs, rng)
            actions[step] = action

            # TRY NOT TO MODIFY: execute the game and log data.
            next_obs, reward, terminated, truncated, infos = envs.step(action)
            rewards[step] = reward
            terminations[step] = terminated
            dones[step] = np.logical_or(terminated, truncated)
            next_obs_buf[step] = next_obs
            if "final_obs" in infos:
                for i in np.flatnonzero(infos["_final_obs"]):
                    next_obs_buf[step, i] = infos["final_obs"][i]
                for i in np.flatnonzero(infos["final_info"]["_episode"]):
                    episode = infos["final_info"]["episode"]
                    print(f"global_step={global_step}, episodic_return={episode['r'][i]}")
                    writer.add_scalar("charts/episodic_return", episode["r"][i], global_step)
                    writer.add_scalar("charts/episodic_length", episode["l"][i], global_step)

        rollout_time = time.time() - iteration_start
        rollout = Rollout(
            obs=torch.tensor(obs, device=device),
            next_obs=torch.tensor(next_obs_buf, device=device),
            actions=torch.tensor(actions, device=device),
            rewards=torch.tensor(rewards, device=device),
            terminations=torch.tensor(terminations, device=device),
            dones=torch.tensor(dones, device=device),
        )
        with torch.no_grad():  # behaviour log-probs of the whole rollout, one batched pass
            behavior_logprobs, _ = agent.get_logprob_entropy(rollout.obs, rollout.actions)
        replay.append(rollout._replace(behavior_logprobs=behavior_logprobs))

        # Advantages of every kept rollout, recomputed with the current critic (its old values
        # and GAE are stale). The newest rollout gets exactly CleanRL's on-policy targets.
        values, advantages, returns = [], [], []
        with torch.no_grad():
            for rollout in replay:
                values.append(agent.get_value(rollout.obs))
                next_values = agent.get_value(rollout.next_obs)
                rollout_advantages, rollout_returns = compute_gae(
                    rollout.rewards,
                    values[-1],
                    next_values,
                    rollout.terminations,
                    rollout.dones,
                    args.gamma,
                    args.gae_lambda,
                )
                advantages.append(rollout_advantages)
                returns.append(rollout_returns)

        # flatten the batch: (kept rollouts x num_steps x num_envs, ...), oldest first
        b_obs = torch.cat([rollout.obs for rollout in replay]).flatten(0, 1)
        b_actions = torch.cat([rollout.actions for rollout in replay]).flatten(0, 1)
        b_logprobs = torch.cat([rollout.behavior_logprobs for rollout in replay]).flatten(0, 1)
        b_advantages = torch.cat(advantages).flatten(0, 1)
        b_returns = torch.cat(returns).flatten(0, 1)
        b_values = torch.cat(values).flatten(0, 1)
        data_size = b_obs.shape[0]
        minibatch_size = data_size // args.num_minibatches  # replay grows minibatches, not step count

        # Optimizing the policy and value network
        clipfracs, lagrange_multipliers = [], []
        for epoch in range(args.update_epochs):
            b_inds = torch.randperm(data_size, device=device)
            # one gather per tensor and epoch; each minibatch is a slice of it
            shuffled = [x[b_inds] for x in (b_obs, b_actions, b_logprobs, b_advantages, b_returns, b_values)]
            epoch_logratios, epoch_ratio_variances = [], []
            for start in range(0, data_size, minibatch_size):
                mb_obs, mb_actions, mb_logprobs, mb_advantages, mb_returns, mb_values = (
                    x[start : start + minibatch_size] for x in shuffled
                )
                newlogprob, entropy = agent.get_logprob_entropy(mb_obs, mb_actions)
                newvalue = agent.get_value(mb_obs)
                epoch_logratios.append((newlogprob - mb_logprobs).detach())  # diagnostics: per epoch, below

                if args.norm_adv:
                    mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)

                # Policy loss
                pg_loss, ratio_variance = r2vpo_policy_loss(
                    newlogprob, mb_logprobs, mb_advantages, lagrange_multiplier, args.variance_center
                )
                epoch_ratio_variances.append(ratio_variance.item())

                # Value loss
                if args.clip_vloss:
                    v_loss_unclipped = (newvalue - mb_returns) ** 2
                    v_clipped = mb_values + torch.clamp(newvalue - mb_values, -args.vf_clip_coef, args.vf_clip_coef)
                    v_loss_clipped = (v_clipped - mb_returns) ** 2
                    v_loss_max = torch.max(v_loss_unclipped, v_loss_clipped)
                    v_loss = 0.5 * v_loss_max.mean()
                else:
                    v_loss = 0.5 * ((newvalue - mb_returns) ** 2).mean()

                entropy_loss = entropy.mean()
                loss = pg_loss + v_loss * args.vf_coef
                if args.ent_coef != 0:  # skipped at the default 0: no entropy nodes in the backward pass
                    loss = loss - args.ent_coef * entropy_loss

                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm, foreach=True)
                optimizer.step()
                if args.dual_rule != "multiplicative":
                    lagrange_multiplier = dual_update(
                        lagrange_multiplier,
                        ratio_variance,
                        args.delta,
                        args.dual_rule,
                        args.lambda_lr,
                        args.lambda_min,
                        args.lambda_max,
                    )
                lagrange_multipliers.append(lagrange_multiplier)

            # diagnostics once per epoch, from its stacked log-ratios
            logratios = torch.stack(epoch_logratios)  # (num_minibatches, minibatch_size)
            ratios = logratios.exp()
            # calculate approx_kl http://joschu.net/blog/kl-approx.html (of the last minibatch)
            old_approx_kl = (-logratios[-1]).mean()
            approx_kl = ((ratios[-1] - 1) - logratios[-1]).mean()
            clipfracs.append(((ratios - 1.0).abs() > args.clip_coef).float().mean().item())

            if args.target_kl is not None and approx_kl > args.target_kl:
                break

        if args.dual_rule == "multiplicative":  # once per iteration, on the last epoch's mean V
            lagrange_multiplier = dual_update(
                lagrange_multiplier,
                np.mean(epoch_ratio_variances),
                args.delta,
                args.dual_rule,
                args.lambda_lr,
                args.lambda_min,
                args.lambda_max,
            )
        # the last epoch's ratios, the ones logged: ESS averaged over its minibatches
        ess = (ratios.mean(1) ** 2 / (ratios**2).mean(1)).mean()

        update_time = time.time() - iteration_start - rollout_time
        y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
        var_y = np.var(y_true)
        explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y

        # TRY NOT TO MODIFY: record rewards for plotting purposes
        writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
        writer.add_scalar("losses/value_loss", v_loss.item(), global_step)
        writer.add_scalar("losses/policy_loss", pg_loss.item(), global_step)
        writer.add_scalar("losses/entropy", entropy_loss.item(), global_step)
        writer.add_scalar("losses/old_approx_kl", old_approx_kl.item(), global_step)
        writer.add_scalar("losses/approx_kl", approx_kl.item(), global_step)
        writer.add_scalar("losses/would_clip_frac", np.mean(clipfracs), global_step)
        writer.add_scalar("losses/ratio_variance", np.mean(epoch_ratio_variances), global_step)
        writer.add_scalar("losses/constraint_violation", np.mean(epoch_ratio_variances) - args.delta, global_step)
        writer.add_scalar("losses/lambda", np.mean(lagrange_multipliers), global_step)
        writer.add_scalar("losses/lambda_max", np.max(lagrange_multipliers), global_step)
        writer.add_scalar("losses/ess", ess.item(), global_step)
        # the same two statistics in both scripts (ratio_variance above is the loss's V in R2VPO)
        writer.add_scalar("losses/ratio_population_variance", ratios.var(1, unbiased=False).mean().item(), global_step)
        writer.add_scalar("losses/ratio_second_moment", ((ratios - 1) ** 2).mean().item(), global_step)
        writer.add_scalar("charts/minibatch_size", minibatch_size, global_step)
        writer.add_scalar("losses/explained_variance", explained_var, global_step)
        writer.add_scalar("charts/rollout_time", rollout_time, global_step)
        writer.add_scalar("charts/update_time", update_time, global_step)
        print("SPS:", int(global_step / (time.time() - start_time)))
        writer.add_scalar("charts/SPS", int(global_step / (time.time() - start_time)), global_step)

    if args.save_model:
        model_path = f"runs/{run_name}/{args.exp_name}.cleanrl_model"
        obs_rms = envs.envs[0].get_wrapper_attr("obs_rms")
        obs_stats = tuple(torch.as_tensor(x) for x in (obs_rms.mean, obs_rms.var, obs_rms.count))
        checkpoint = {"agent": agent.state_dict(), "obs_rms": obs_stats, "seed": args.seed}
        torch.save(checkpoint, model_path)
        print(f"model saved to {model_path}")
        if args.eval_episodes > 0:
            episodic_returns = evaluate(
                model_path, args.env_id, args.eval_episodes, run_name, device, args.capture_video
            )
            for idx, episodic_return in enumerate(episodic_returns):
                writer.add_scalar("eval/episodic_return", episodic_return, idx)
            print(f"eval: mean episodic return {np.mean(episodic_returns):.1f} over {len(episodic_returns)} episodes")

    envs.close()
    writer.close()


if __name__ == "__main__":
    main()
