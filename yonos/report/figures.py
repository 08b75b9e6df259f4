"""Figures sized for a paper column (3.4 in wide, 7 pt text, 300 dpi): quality vs sampling steps,
quality vs seconds per image (Pareto view), and visual grids with zoomed crops."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display; must precede pyplot
import matplotlib.pyplot as plt
import numpy as np

from yonos.io import atomic_path, list_images, read_image
from yonos.metrics import registry
from yonos.report.tables import UNRANKED_VARIANTS, dataset_title, variant_order, variant_title

COLUMN_WIDTH_IN = 3.4          # one column of a two-column paper (CVPR/ECCV: 3.25-3.4 in)
DPI = 300
STYLE = {"font.size": 7, "axes.titlesize": 7, "axes.labelsize": 7, "legend.fontsize": 6,
         "xtick.labelsize": 6, "ytick.labelsize": 6, "lines.linewidth": 1.0, "lines.markersize": 3,
         "axes.spines.top": False, "axes.spines.right": False}
GRID_COLUMNS = ("lr", "bicubic", "sr3_x4", "ldmsr_x4", "stablesr_x4", "direct_x4", "distilled_x4",
                "distilled_x4+decoder", "hr")
GRID_TITLES = {"lr": "LR", "hr": "HR", "bicubic": "Bicubic", "sr3_x4": "SR3", "ldmsr_x4": "LDM-SR",
               "stablesr_x4": "StableSR", "direct_x4": "Direct", "distilled_x4": "Distilled",
               "distilled_x4+decoder": "+ decoder"}


def _colour(variant: str):
    order = [k for k in GRID_TITLES if k not in ("lr", "hr")] + ["teacher_x2", "autoencoder"]  # 9 of tab10's 10
    idx = order.index(variant) if variant in order else len(order) + sum(map(ord, variant)) % 5
    return plt.get_cmap("tab10")(idx % 10)


def save_figure(fig, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:  # tmp keeps the .png suffix, so matplotlib picks the format
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight")
    plt.close(fig)


def _plotted_metrics(sub) -> list[str]:
    """Metrics with at least one value (all-n/a metrics are named in the caption, not plotted)."""
    from yonos.report.tables import metric_order

    have = sub.dropna(subset=["value"])["metric"].unique()
    return metric_order(have)


def _axes_grid(n: int, row_height: float = 1.25):
    cols = 2 if n > 1 else 1
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(COLUMN_WIDTH_IN, row_height * rows + 0.35), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat[:n])


def _finish(fig, axes, dataset: str, path) -> None:
    """Legend below the panels, the dataset as title, then save."""
    _shared_legend(fig, axes)
    fig.suptitle(dataset_title(dataset), y=1.0)
    fig.tight_layout()
    save_figure(fig, path)


def _shared_legend(fig, axes) -> None:
    handles, labels = {}, {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    labels = list(handles)
    fig.legend([handles[k] for k in labels], labels, loc="lower center", ncol=min(3, len(labels)),
               frameon=False, bbox_to_anchor=(0.5, -0.02 - 0.035 * math.ceil(len(labels) / 3)))


def steps_figure(df, dataset: str, path) -> list[str]:
    """Each metric vs DDIM steps (log2 axis), one line per diffusion variant; methods evaluated at a
    single step count (bicubic) are horizontal dashed lines. Returns the metrics plotted."""
    sub = df[df["dataset"] == dataset]
    metrics = _plotted_metrics(sub)
    if not metrics:
        return []
    with plt.rc_context(STYLE):
        fig, axes = _axes_grid(len(metrics))
        for ax, metric in zip(axes, metrics, strict=True):
            msub = sub[sub["metric"] == metric]
            for variant in variant_order(msub["variant"].unique()):
                v = msub[msub["variant"] == variant].sort_values("steps")
                kw = {"color": _colour(variant), "label": variant_title(variant)}
                if v["steps"].nunique() == 1:
                    ax.axhline(v["value"].iloc[0], ls="--", **kw)
                else:
                    ax.plot(v["steps"], v["value"], marker="o", **kw)
            ax.set_xscale("log", base=2)
            ax.set_title(f"{registry.title(metric)} {registry.arrow(metric)}".strip())
            ax.set_xlabel("sampling steps")  # DDIM (YONOS, LDM-SR), DDPM (SR3, StableSR)
            ax.grid(alpha=0.3, lw=0.5)
        _finish(fig, axes, dataset, path)
    return metrics


def pareto_front(seconds: np.ndarray, values: np.ndarray, higher_better: bool) -> np.ndarray:
    """Indices of points no other point beats on both time (lower) and quality."""
    q = values if higher_better else -values
    keep = [i for i in range(len(q))
            if not any((seconds[j] <= seconds[i]) and (q[j] >= q[i]) and (seconds[j] < seconds[i] or q[j] > q[i])
                       for j in range(len(q)))]
    return np.array(sorted(keep, key=lambda i: seconds[i]), dtype=int)


def pareto_figure(df, dataset: str, metrics, path) -> list[str]:
    """Quality vs seconds per image (log axis); each variant's points joined in step order and
    labelled with their step count; the Pareto front over the ranked points (not the x2 teacher) drawn in grey."""
    sub = df[(df["dataset"] == dataset) & df["seconds_per_image"].notna() & df["value"].notna()]
    metrics = [m for m in metrics if m in set(sub["metric"])]
    if not metrics:
        return []
    with plt.rc_context(STYLE):
        fig, axes = _axes_grid(len(metrics), row_height=1.6)
        for ax, metric in zip(axes, metrics, strict=True):
            msub = sub[sub["metric"] == metric]
            for variant in variant_order(msub["variant"].unique()):
                v = msub[msub["variant"] == variant].sort_values("steps")
                ax.plot(v["seconds_per_image"], v["value"], marker="o", color=_colour(variant),
                        label=variant_title(variant))
                for s, x, y in zip(v["steps"], v["seconds_per_image"], v["value"], strict=True):
                    ax.annotate(str(s), (x, y), fontsize=5, xytext=(2, 2), textcoords="offset points")
            ranked = msub[~msub["variant"].isin(UNRANKED_VARIANTS)]
            front = pareto_front(ranked["seconds_per_image"].to_numpy(float), ranked["value"].to_numpy(float),
                                 registry.higher_better(metric) is not False)
            pts = ranked.iloc[front]
            ax.step(pts["seconds_per_image"], pts["value"], where="post", color="0.6", lw=2, alpha=0.4,
                    zorder=0, label="Pareto front")
            ax.set_xscale("log")
            ax.set_xlabel("seconds per image")
            ax.set_title(f"{registry.title(metric)} {registry.arrow(metric)}".strip())
            ax.grid(alpha=0.3, lw=0.5)
        _finish(fig, axes, dataset, path)
    return metrics


# --- visual grid ------------------------------------------------------------------------------


def _folder_for(images_dirs: Sequence[Path], column: str, steps: int) -> Path | None:
    """lr/, hr/ as named; a method's folder is <variant>_s<steps>, or its only <variant>_s* folder; the
    first of `images_dirs` (one per evaluate stage) that has it."""
    for images_dir in images_dirs:
        if column in ("lr", "hr"):
            if (images_dir / column).is_dir():
                return images_dir / column
            continue
        exact = images_dir / f"{column}_s{steps}"
        if exact.is_dir():
            return exact
        found = sorted(images_dir.glob(f"{column}_s*"))
        if len(found) == 1:
            return found[0]
    return None


def zoom_box(hr: np.ndarray, frac: float) -> tuple[int, int, int]:
    """(top, left, size) of the most textured square window of side frac*min(H, W) (largest
    gradient energy on a coarse grid): where SR methods differ most."""
    h, w = hr.shape[:2]
    size = max(8, int(min(h, w) * frac))
    grey = hr.mean(axis=2)
    energy = np.abs(np.diff(grey, axis=0))[:, :-1] + np.abs(np.diff(grey, axis=1))[:-1, :]
    stride = max(1, size // 4)
    best, box = -1.0, (0, 0)
    for top in range(0, h - size, stride):
        for left in range(0, w - size, stride):
            e = float(energy[top:top + size - 1, left:left + size - 1].sum())
            if e > best:
                best, box = e, (top, left)
    return box[0], box[1], size


def _load_rgb(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    img = read_image(path)
    # LR: nearest-neighbour to HR size, so its pixels stay visible
    if size is not None and tuple(img.shape[-2:]) != tuple(size):
        import torch.nn.functional as F

        img = F.interpolate(img[None], size=size, mode="nearest")[0]
    return img.permute(1, 2, 0).numpy()


def shared_ids(hr_folder: Path, folders: Sequence[Path], n: int) -> list[str]:
    """n image names of `hr_folder`, those saved by the most columns first, then in name order: a method
    scored on a subset of a set (`images: N`) saved other images than one scored on all of it."""
    names = [p.name for p in list_images(hr_folder)]
    count = {name: sum((f / name).is_file() for f in folders) for name in names}
    return sorted(names, key=lambda name: (-count[name], names.index(name)))[:n]


def grid_figure(images_dirs: str | os.PathLike | Sequence[str | os.PathLike], path, *, steps: int = 1,
                n_images: int = 2, zoom: float = 0.25, column_steps: dict[str, int] | None = None) -> list[str] | None:
    """Rows: for each image, the full frame (zoom box drawn) then the zoomed crop; columns
    LR | bicubic | SR3 | LDM-SR | StableSR | direct ×4 | distilled ×4 | distilled + decoder | HR, each
    method at `steps` unless `column_steps` names its own (a baseline at its default step count).
    Missing columns are skipped and returned as the caption's list of absent methods; None when there
    is no HR folder."""
    dirs = [Path(images_dirs)] if isinstance(images_dirs, (str, os.PathLike)) else [Path(d) for d in images_dirs]
    column_steps = column_steps or {}
    folders = {c: _folder_for(dirs, c, column_steps.get(c, steps)) for c in GRID_COLUMNS}
    if folders["hr"] is None:
        return None
    columns = [c for c in GRID_COLUMNS if folders[c] is not None]
    ids = shared_ids(folders["hr"], [folders[c] for c in columns], n_images)
    width = COLUMN_WIDTH_IN * 2  # a grid needs the full text width (figure*)
    cell = width / len(columns)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(2 * len(ids), len(columns), figsize=(width, cell * 2 * len(ids) + 0.2),
                                 squeeze=False, gridspec_kw={"wspace": 0.03, "hspace": 0.03})
        for i, name in enumerate(ids):
            hr = _load_rgb(folders["hr"] / name)
            top, left, size = zoom_box(hr, zoom)
            for j, col in enumerate(columns):
                img = _load_rgb(folders[col] / name, hr.shape[:2]) if (folders[col] / name).is_file() else None
                full, crop = axes[2 * i, j], axes[2 * i + 1, j]
                for ax in (full, crop):
                    ax.axis("off")
                if img is None:
                    full.text(0.5, 0.5, "missing", ha="center", va="center", transform=full.transAxes)
                    continue
                full.imshow(img, interpolation="nearest")
                full.add_patch(plt.Rectangle((left, top), size, size, fill=False, ec="red", lw=0.8))
                crop.imshow(img[top:top + size, left:left + size], interpolation="nearest")
                if i == 0:
                    full.set_title(GRID_TITLES[col])
        save_figure(fig, path)
    return [GRID_TITLES[c] for c in GRID_COLUMNS if c not in columns]
