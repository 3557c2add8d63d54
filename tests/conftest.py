import os

# scikit-learn's check_array_api_input is skipped unless SciPy's array API support is
# switched on before SciPy is first imported.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def hopper():
    """Transitions of two behaviour policies on MuJoCo Hopper-v5 (about 1 s to make)."""
    pytest.importorskip("mujoco")
    from rl_data import rollout_hopper

    return {
        "linear": rollout_hopper("linear", 3000, seed=0),
        "uniform": rollout_hopper("uniform", 1500, seed=1),
    }
