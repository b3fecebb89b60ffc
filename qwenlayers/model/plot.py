"""The drift plot of a checked whole-model run: relative error of each layer's output against
the fp32 chain, against layer depth, one line per step, the platform solid and the bf16 golden
chain dashed in the same colour, so drift that grows with depth (or a step that jumps) is seen."""

from __future__ import annotations

from pathlib import Path

from qwenlayers.model.generation import Generation


def plot_drift(gen: Generation, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for step in sorted({d.step for d in gen.drift}):
        mine = sorted((d for d in gen.drift if d.step == step), key=lambda d: d.layer)
        layers = [d.layer for d in mine]
        label = "prefill" if step == 0 else f"decode step {step}"
        line = ax.plot(layers, [d.platform_rel for d in mine], marker="o", markersize=3, label=f"{gen.platform}, {label}")[0]
        ax.plot(layers, [d.bf16_rel for d in mine], linestyle="--", color=line.get_color(), alpha=0.6,
                label=f"bf16 golden, {label}")
    ax.set_xlabel("layer")
    ax.set_ylabel("relative RMS error against the fp32 chain")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(f"{gen.model}: drift with depth on {gen.platform} ({gen.layers} layers)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
