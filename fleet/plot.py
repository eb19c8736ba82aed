"""The PNG: upstream calls per second over time for each policy, with the API's limit."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .model import API_SM_BATCH, API_SM_GET, API_SSM
from .simulator import Result


def _series(result: Result, apis: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, str]:
    """x (hours or seconds) and the highest 1-second rate in each plotted bucket."""
    per_s = result.per_second(result.calls[list(apis)].sum(0))
    horizon = len(per_s)
    bucket = 60 if horizon > 2 * 3600 else 1
    n = len(per_s) // bucket * bucket
    peaks = per_s[:n].reshape(-1, bucket).max(1)
    x = np.arange(len(peaks)) * bucket
    if horizon > 2 * 3600:
        return x / 3600.0, peaks, "hours"
    return x, peaks, "seconds"


def write_plot(results: list[Result], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(12.5, 7.5), sharex=True)
    panels = (
        (axes[0], (API_SSM,), "Parameter Store calls/s", results[0].limits.ssm_tps),
        (axes[1], (API_SM_GET, API_SM_BATCH), "Secrets Manager calls/s", None),
    )
    unit = "hours"
    for ax, apis, label, limit in panels:
        for r in results:
            x, y, unit = _series(r, apis)
            ax.plot(x, y, linewidth=1.0, label=r.policy.name)
        if limit is not None:
            ax.axhline(
                limit, color="black", linestyle="--", linewidth=1.2, label=f"limit {limit:g}/s"
            )
        ax.set_ylabel(label)
        ax.set_yscale("symlog", linthresh=1)
        ax.set_ylim(bottom=0)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    bucket_note = "highest 1-s rate per minute" if unit == "hours" else "1-s rate"
    axes[1].set_xlabel(f"time ({unit}); {bucket_note}; attempts including throttled ones")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
