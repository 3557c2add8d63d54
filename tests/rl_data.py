"""Offline-RL test data generated from the real MuJoCo Hopper-v5 simulator.

Two behaviour policies make two different state-action distributions:
``'uniform'`` draws actions uniformly from the action box; ``'linear'`` is a fixed,
seeded linear feedback policy ``tanh(W obs + b)`` with a little Gaussian noise. Files
written from them are named for what they are (e.g. ``hopper_generated-linear-v2.hdf5``),
never as published D4RL/Minari datasets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def rollout_hopper(policy: str, n_steps: int, seed: int = 0, max_episode_steps: int = 40):
    """Run Hopper-v5 under ``policy`` ('uniform' or 'linear') for ``n_steps`` transitions."""
    from skvae.datasets import collect_transitions

    if policy == "linear":
        weights = np.random.RandomState(1234).normal(scale=0.5, size=(3, 11))
        bias = np.array([0.5, -0.5, 0.3])

        def policy(obs, rng):
            return np.tanh(weights @ obs + bias) + 0.1 * rng.normal(size=3)

    elif policy != "uniform":
        raise ValueError(policy)
    return collect_transitions("Hopper-v5", policy, n_steps, seed, max_episode_steps)


def write_d4rl_hdf5(path: Path, data: dict) -> Path:
    """Write ``data`` in D4RL's HDF5 layout (top-level datasets under the D4RL keys)."""
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for k, v in data.items():
            f.create_dataset(k, data=v)
    return path


def write_minari(root: Path, dataset_id: str, data: dict) -> Path:
    """Write ``data`` in Minari 0.5's layout: ``episode_i`` groups with T + 1 observations."""
    import h5py

    file = root / dataset_id / "data" / "main_data.hdf5"
    file.parent.mkdir(parents=True, exist_ok=True)
    ends = np.flatnonzero(data["terminals"] | data["timeouts"])
    bounds = np.r_[0, ends + 1]
    if bounds[-1] < len(data["actions"]):  # a last, unfinished episode
        bounds = np.r_[bounds, len(data["actions"])]
    with h5py.File(file, "w") as f:
        for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            ep = f.create_group(f"episode_{i}")
            obs = np.concatenate([data["observations"][a:b], data["next_observations"][b - 1 : b]])
            ep.create_dataset("observations", data=obs)
            ep.create_dataset("actions", data=data["actions"][a:b])
            ep.create_dataset("rewards", data=data["rewards"][a:b])
            ep.create_dataset("terminations", data=data["terminals"][a:b])
            ep.create_dataset("truncations", data=data["timeouts"][a:b])
    return file
