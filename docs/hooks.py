"""mkdocs hook: render the figures the docs show from the examples' data, before building."""

from pathlib import Path


def on_pre_build(config, **kwargs):
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np

    from skvae import VAEOutlierDetector, make_synthetic
    from skvae.plotting import (
        plot_evaluation,
        plot_latent_space,
        plot_training_history,
    )

    out = Path(config["docs_dir"]) / "figures"
    out.mkdir(exist_ok=True)
    X, y = make_synthetic(2000, 6, anomaly_type="cluster", random_state=0)
    det = VAEOutlierDetector(random_state=0).fit(X[y == 0][:1500])
    ax = plot_training_history(det)
    ax.figure.savefig(out / "training_history.png", dpi=90)
    held = np.vstack([X[y == 0][1500:], X[y == 1]])
    labels = np.r_[np.zeros(len(X[y == 0]) - 1500), np.ones(int(y.sum()))]
    fig = plot_evaluation(det.score_samples(held), labels, threshold=det.offset_)
    fig.savefig(out / "evaluation.png", dpi=90)
    ax = plot_latent_space(det, held, labels)
    ax.figure.savefig(out / "latent_space.png", dpi=90)
    matplotlib.pyplot.close("all")
