"""``paro plot``: PNGs of a plan - per head, the attention map (block mass) before and after reordering and
the block bitmap; and one overview of orders and bit allocation per head."""

from pathlib import Path

import numpy as np

from paro.errors import ParoError
from paro.files import save_figure

__all__ = ["plot_plan"]


def plot_plan(plan, out_dir, heads=None):
    """Write ``head<h>.png`` for each selected head and ``overview.png`` into ``out_dir``; returns the paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import BoundaryNorm, ListedColormap, LogNorm

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ParoError(f"--output {str(out_dir)!r} exists and is not a folder")
    heads = list(range(plan.heads)) if heads is None else heads
    for h in heads:
        if not 0 <= h < plan.heads:
            raise ParoError(f"head {h} out of range: the plan has {plan.heads} heads")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    bits = list(plan.config.bitwidths)
    colors = {0: "#f2f2f2", 2: "#9ecae1", 4: "#4292c6", 8: "#08306b"}
    cmap = ListedColormap([colors[b] for b in bits])
    norm = BoundaryNorm([b - 0.5 for b in bits] + [bits[-1] + 0.5], len(bits))
    for h in heads:
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
        floor = max(float(plan.block_mass_identity[h].max()) * 1e-4, 1e-12)   # four decades of mass
        for ax, mass, title in ((axes[0], plan.block_mass_identity[h], "identity order FHW"),
                                (axes[1], plan.block_mass[h], f"reordered {plan.orders[h]}")):
            image = ax.imshow(np.maximum(mass, floor), norm=LogNorm(vmin=floor, vmax=float(mass.max())),
                              cmap="magma", interpolation="nearest")
            ax.set_title(f"head {h}: attention mass per block, {title}")
            ax.set_xlabel("key block")
            ax.set_ylabel("query block")
            fig.colorbar(image, ax=ax, fraction=0.046)
        image = axes[2].imshow(plan.bitmap[h], cmap=cmap, norm=norm, interpolation="nearest")
        kept = plan.bitmap[h] > 0
        axes[2].set_title(f"block bitwidths: density {kept.mean():.2f}, avg bits {plan.bitmap[h].mean():.2f}")
        axes[2].set_xlabel("key block")
        fig.colorbar(image, ax=axes[2], ticks=bits, fraction=0.046)
        fig.tight_layout()
        path = out_dir / f"head{h}.png"
        save_figure(fig, path)
        plt.close(fig)
        written.append(path)

    fig, ax = plt.subplots(figsize=(max(6, 0.3 * plan.heads + 3), 4))
    bottom = np.zeros(plan.heads)
    for b in bits:
        share = (plan.bitmap == b).reshape(plan.heads, -1).mean(axis=1)
        ax.bar(range(plan.heads), share, bottom=bottom, color=colors[b], label=f"{b}-bit", edgecolor="#999999")
        bottom += share
    ax.set_xticks(range(plan.heads), [f"{h}\n{o}" for h, o in enumerate(plan.orders)], fontsize=7)
    ax.set_ylabel("share of blocks")
    ax.set_title(f"bit allocation per head (order below): avg {plan.bitmap.mean():.2f} bits, "
                 f"density {(plan.bitmap > 0).mean():.2f}")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path = out_dir / "overview.png"
    save_figure(fig, path)
    plt.close(fig)
    written.append(path)
    return written
