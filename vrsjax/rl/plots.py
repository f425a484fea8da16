"""PNG curves of a training run: reward components, KL, entropy, policy metrics and response length."""

from __future__ import annotations

from pathlib import Path


def plot_history(history: list[dict], path: str | Path) -> Path:
    """One figure with a panel per metric family; returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    steps = [m["step"] for m in history]
    panels = {
        "reward components (mean)": sorted(k for k in history[0] if k.startswith("reward/") and k.endswith("_mean")),
        "KL to the reference": [k for k in ("actor/kl_loss", "actor/kl_penalty") if k in history[0]],
        "entropy": [k for k in ("actor/entropy",) if k in history[0]],
        "policy": [k for k in ("actor/pg_loss", "actor/clipfrac", "actor/grad_norm") if k in history[0]],
        "response length": [k for k in ("response/length_mean", "response/length_max") if k in history[0]],
    }
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6))
    for ax, (title, keys) in zip(axes, panels.items(), strict=True):
        for key in keys:
            ax.plot(steps, [m[key] for m in history], marker="o", ms=3, label=key.split("/", 1)[1])
        ax.set_title(title)
        ax.set_xlabel("step")
        if keys:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
