"""PNG plots of a comparison: gate values, loss curves, predicted masks over images."""

from __future__ import annotations

import pathlib
import re
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.figure  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mopeft_jax.peft import names  # noqa: E402

# The gated submodules of a block, in the order the gate plot lists them.
SUBMODULES = (*names.LORA_LAYERS, names.PREFIX, *names.PREFIX_KV, names.ADAPTER)


def gate_plot(results: Sequence, path: pathlib.Path) -> None:
    """Mean gate value per block, one panel per gated method, one line per submodule and
    dataset: which PEFT each dataset leans on, and where in the encoder."""
    gated = [r for r in results if r.gates]
    if not gated:
        return
    methods = list(dict.fromkeys(r.method for r in gated))
    fig, axes = plt.subplots(1, len(methods), figsize=(6 * len(methods), 4), squeeze=False)
    for ax, method in zip(axes[0], methods):
        for r in (r for r in gated if r.method == method):
            for sub in SUBMODULES:
                blocks = sorted(
                    (int(m.group(1)), v)
                    for k, v in r.gates.items()
                    if (m := re.fullmatch(rf"blocks_(\d+)/{sub}", k))
                )
                if blocks:
                    ax.plot(
                        [b for b, _ in blocks],
                        [v for _, v in blocks],
                        marker="o",
                        label=f"{r.dataset}: {sub}",
                    )
        ax.set(
            title=f"{method}: gate values", xlabel="encoder block", ylabel="mean gate", ylim=(0, 1)
        )
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def loss_curves(results: Sequence, path: pathlib.Path) -> None:
    """Training loss per step, one panel per dataset, one line per method."""
    trained = [r for r in results if r.history]
    if not trained:
        return
    names = list(dict.fromkeys(r.dataset for r in trained))
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        for r in (r for r in trained if r.dataset == name):
            ax.plot([h["step"] for h in r.history], [h["loss"] for h in r.history], label=r.method)
        ax.set(title=name, xlabel="step", ylabel="loss", yscale="log")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def overlay(image: np.ndarray, label_map: np.ndarray, num_classes: int, alpha: float = 0.5):
    """Colours a class map (H, W) over an RGB image (H, W, 3) uint8; values >= num_classes (the
    ignore label) stay uncoloured."""
    colours = (matplotlib.colormaps["tab10"](np.arange(num_classes) % 10)[:, :3] * 255).astype(
        np.float32
    )
    out = image.astype(np.float32).copy()
    known = label_map < num_classes
    out[known] = (1 - alpha) * out[known] + alpha * colours[label_map[known]]
    return out.astype(np.uint8)


def mask_panels(rows: Sequence, num_classes: int, path: pathlib.Path, title: str) -> None:
    """A grid of (image, ground truth overlay, prediction overlay) rows."""
    # A Figure of its own, not pyplot's global state: a comparison's workers plot at once.
    fig = matplotlib.figure.Figure(figsize=(9, 3 * len(rows)))
    axes = fig.subplots(len(rows), 3, squeeze=False)
    for ax_row, (image, label, prediction) in zip(axes, rows):
        for ax, picture, name in zip(
            ax_row,
            (image, overlay(image, label, num_classes), overlay(image, prediction, num_classes)),
            ("image", "ground truth", "prediction"),
        ):
            ax.imshow(picture)
            ax.set_title(name, fontsize=9)
            ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
