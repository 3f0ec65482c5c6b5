"""The PNG of a federated run: the global model's MAE, RMSE and R² per round, the baselines as lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_history(report: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no screen needed
    import matplotlib.pyplot as plt

    rounds = [h["round"] for h in report["rounds"]]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    styles = {"persistence": ":", "local_only": "--", "centralized": "-."}
    for ax, metric in zip(axes, ("mae", "rmse", "r2")):
        ax.plot(rounds, [h[metric] for h in report["rounds"]], "o-", label=f"global ({report['strategy']})")
        for name, m in report.get("baselines", {}).items():
            ax.axhline(m[metric], linestyle=styles.get(name, ":"), color="grey", label=name)
        ax.set_title(metric.upper() if metric != "r2" else "R²")
        ax.set_xlabel("round")
        ax.set_xticks(rounds)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"meterseal fl run {report.get('run_id', '')}: held-out windows, all regions", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
