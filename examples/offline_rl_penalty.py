"""Offline-RL workflow: a VAE reward penalty that rises out of distribution.

Collects transitions from the MuJoCo Hopper-v5 simulator (needs ``gymnasium[mujoco]``)
under one behaviour policy, trains the detector on ``[next_observations, actions]`` as
MOPO-style model-based RL scores them, and shows the reward penalty on held-out
transitions of the same policy, of another policy, and of perturbed dynamics (the
same policy with the motors three times stronger).
"""

import gymnasium as gym
import numpy as np
from sklearn.metrics import roc_auc_score

from skvae import RewardPenalty, VAEOutlierDetector
from skvae.datasets import collect_transitions, make_features, split_indices

WEIGHTS = np.random.RandomState(1234).normal(scale=0.5, size=(3, 11))


def behaviour(obs, rng):
    """A fixed linear feedback policy with a little exploration noise."""
    return np.tanh(WEIGHTS @ obs + [0.5, -0.5, 0.3]) + 0.1 * rng.normal(size=3)


data = collect_transitions("Hopper-v5", behaviour, n_steps=6000, seed=0, max_episode_steps=200)
train, val, test = split_indices(data, val_ratio=0.1, test_ratio=0.2)  # time order, by episode
X = make_features(data, "next_obs_action")

# A density model of the whole dataset: every member sees every row, and every row
# counts in the loss (no trimming: rare transitions of the behaviour policy are data).
detector = VAEOutlierDetector(
    max_samples=1.0, trim_fraction=0.0, epochs=60, contamination=0.05, random_state=0
)
detector.fit(X[train], validation_data=X[val])
penalty = RewardPenalty(detector, kind="hinge", coef=1.0)

other_policy = make_features(collect_transitions("Hopper-v5", "uniform", 1500, seed=1))
strong_motors = gym.make("Hopper-v5", max_episode_steps=200)
strong_motors.unwrapped.model.actuator_gear[:] *= 3.0
perturbed = make_features(collect_transitions(strong_motors, behaviour, 1500, seed=2))

in_dist = penalty.penalty(X[test])
print(f"mean penalty, held-out transitions of the behaviour policy: {in_dist.mean():.3f}")
for name, X_ood in [("uniform random policy", other_policy), ("motors 3x stronger", perturbed)]:
    p = penalty.penalty(X_ood)
    y = np.r_[np.zeros(len(in_dist)), np.ones(len(p))]
    auc = roc_auc_score(y, np.r_[in_dist, p])
    print(f"mean penalty, {name}: {p.mean():.3f}  (ROC AUC in vs out: {auc:.3f})")

rewards = data["rewards"][test]
print(
    f"mean reward {rewards.mean():.3f} -> penalised {penalty.penalize(rewards, X[test]).mean():.3f}"
)
