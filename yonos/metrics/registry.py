"""The metric protocol as data: one entry per metric, with everything a table or a reader needs.

Every number comes from pyiqa (the implementation the one-step SR literature reports, PAPER.md §3);
this file only fixes the settings and says where each metric's weight files live. Weights are never
downloaded here: a metric whose files are not on disk is `n/a` with a reason naming FILE and DIR.

Weight lookup, in order:
  1. `$YONOS_PYIQA_WEIGHTS` (a flat folder mirroring pyiqa's weight files), for files pyiqa accepts
     as a path argument (`path_kwarg`);
  2. the folder the library itself reads: pyiqa's `$TORCH_HOME/hub/pyiqa/`, torchvision's
     `$TORCH_HOME/hub/checkpoints/`, CLIP's `$TORCH_HOME/hub/clip/`, or the Hugging Face cache.

Reasons name these folders the way a user types them (`$TORCH_HOME/hub/pyiqa/`,
`$YONOS_PYIQA_WEIGHTS`), never as the expanded path of the machine that ran: they end up in
committed reports.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

MIRROR_ENV = "YONOS_PYIQA_WEIGHTS"
PYIQA_URL = "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/"


@dataclass(frozen=True)
class WeightFile:
    name: str                      # file name exactly as the loading library expects it
    home: str                      # pyiqa | torch_checkpoints | clip | hf:<repo_id>
    source: str                    # where it is published (for docs and a download command)
    path_kwarg: str | None = None  # pyiqa option that takes a local path to this file, if any


@dataclass(frozen=True)
class MetricSpec:
    name: str                      # our name: the key in params, CSVs and tables
    title: str                     # column header in tables
    reference: str                 # "full" (SR vs HR) or "none" (SR alone)
    higher_better: bool
    colour_space: str              # what the metric sees
    input_range: str               # what pyiqa is given (it rescales internally where needed)
    pyiqa_name: str
    pyiqa_kwargs: dict = field(default_factory=dict)
    weights: tuple[WeightFile, ...] = ()
    level: str = "image"           # "image": one value per image; "folder": one value per folder pair
    crops_border: bool = False     # True: Scorer(border=k) removes k pixels per side first
    min_side: int = 0              # smallest image side the implementation accepts (0: any)
    note: str = ""

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_better else "↓"


def _pyiqa_file(name: str, path_kwarg: str | None = None) -> WeightFile:
    return WeightFile(name, "pyiqa", PYIQA_URL + name, path_kwarg)


_TV = "https://download.pytorch.org/models/"

METRICS: dict[str, MetricSpec] = {
    "psnr": MetricSpec(
        "psnr", "PSNR", "full", True, "Y of YCbCr (ITU-R BT.601, studio range, as MATLAB rgb2ycbcr)",
        "[0, 1]", "psnr", {"test_y_channel": True, "color_space": "ycbcr"}, crops_border=True,
        note="pyiqa's default colour_space is 'yiq' and its plain `psnr` is RGB: both differ by 1-2 dB",
    ),
    "ssim": MetricSpec(
        "ssim", "SSIM", "full", True, "Y of YCbCr (BT.601, studio range)", "[0, 1]", "ssim",
        {"test_y_channel": True, "color_space": "ycbcr"}, crops_border=True,
        note="Gaussian window 11, sigma 1.5, no downsampling (pyiqa `ssim`, MATLAB ssim_index)",
    ),
    "lpips": MetricSpec(
        "lpips", "LPIPS", "full", False, "RGB", "[0, 1] (pyiqa maps to [-1, 1] itself)", "lpips",
        {"net": "alex", "version": "0.1"},
        (_pyiqa_file("LPIPS_v0.1_alex-df73285e.pth", "pretrained_model_path"),
         WeightFile("alexnet-owt-7be5be79.pth", "torch_checkpoints", _TV + "alexnet-owt-7be5be79.pth")),
    ),
    "dists": MetricSpec(
        "dists", "DISTS", "full", False, "RGB", "[0, 1]", "dists", {},
        (_pyiqa_file("DISTS_weights-f5e65c96.pth", "pretrained_model_path"),
         WeightFile("vgg16-397923af.pth", "torch_checkpoints", _TV + "vgg16-397923af.pth")),
    ),
    "fid": MetricSpec(
        "fid", "FID", "full", False, "RGB, resized to 299x299 (clean-fid 'clean' mode)", "image files",
        "fid", {}, (_pyiqa_file("pt_inception-2015-12-05-6726825d.pth"),), level="folder",
        note="folder of SR images vs folder of HR images; not per image, needs many images to be stable",
    ),
    "niqe": MetricSpec(
        "niqe", "NIQE", "none", False, "Y of YCbCr (BT.601)", "[0, 1]", "niqe",
        {"test_y_channel": True, "color_space": "ycbcr"},
        (_pyiqa_file("niqe_modelparameters.mat", "pretrained_model_path"),), min_side=96,
        note="96 px minimum: NIQE fits its model on 96x96 blocks (smaller inputs fail inside pyiqa)",
    ),
    "musiq": MetricSpec(
        "musiq", "MUSIQ", "none", True, "RGB", "[0, 1]", "musiq", {"pretrained": "koniq10k"},
        (_pyiqa_file("musiq_koniq_ckpt-e95806b9.pth", "pretrained_model_path"),),
        note="KonIQ-10k model (pyiqa `musiq`), as in StableSR/OSEDiff tables",
    ),
    "maniqa": MetricSpec(
        "maniqa", "MANIQA", "none", True, "RGB", "[0, 1]", "maniqa-pipal", {},
        (_pyiqa_file("MANIQA_PIPAL-ae6d356b.pth"),
         WeightFile("model.safetensors", "hf:timm/vit_base_patch8_224.augreg2_in21k_ft_in1k",
                    "https://huggingface.co/timm/vit_base_patch8_224.augreg2_in21k_ft_in1k")),
        note="the PIPAL model (`maniqa-pipal`), not pyiqa's default KonIQ `maniqa`: values differ",
    ),
    "clipiqa": MetricSpec(
        "clipiqa", "CLIPIQA", "none", True, "RGB", "[0, 1]", "clipiqa", {},
        (WeightFile("RN50.pt", "clip", "https://openaipublic.azureedge.net/clip/models/afeb0e10f9e5a86da6080e35cf"
                    "09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt", "backbone"),),
        note="CLIP-IQA with the RN50 backbone and pyiqa's prompt ensemble (not CLIPIQA+)",
    ),
}

# Computed by the evaluator itself (not pyiqa); listed so tables still get their arrows.
EVALUATOR_METRICS: dict[str, bool] = {"latent_psnr": True, "ae_recon_psnr": True}

DEFAULT_METRICS = ("psnr", "ssim", "lpips", "dists", "niqe", "musiq", "maniqa", "clipiqa")


def get(name: str) -> MetricSpec:
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRICS)}") from None


def higher_better(name: str) -> bool | None:
    """Direction for any metric that can appear in results.csv; None when unknown."""
    if name in METRICS:
        return METRICS[name].higher_better
    return EVALUATOR_METRICS.get(name)


def arrow(name: str) -> str:
    hb = higher_better(name)
    return "" if hb is None else ("↑" if hb else "↓")


def title(name: str) -> str:
    return METRICS[name].title if name in METRICS else name


# --- where weight files live ------------------------------------------------------------------


def torch_hub_dir() -> Path:
    import torch.hub

    return Path(torch.hub.get_dir())


def pyiqa_cache_dir() -> Path:
    """The folder pyiqa downloads to and reads from. pyiqa fixes it at import time from TORCH_HOME,
    so once pyiqa is imported its own value is the truth."""
    mod = sys.modules.get("pyiqa.utils.download_util")
    return Path(mod.DEFAULT_CACHE_DIR) if mod is not None else torch_hub_dir() / "pyiqa"


def home_dir(home: str) -> Path | None:
    if home == "pyiqa":
        return pyiqa_cache_dir()
    if home == "torch_checkpoints":
        return torch_hub_dir() / "checkpoints"
    if home == "clip":
        return torch_hub_dir() / "clip"
    return None  # Hugging Face cache: looked up by repo id, not by folder


def mirror_dir() -> Path | None:
    value = os.environ.get(MIRROR_ENV)
    return Path(value) if value else None


def _hf_cached(repo_id: str, filename: str) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    # timm reads model.safetensors when present, else pytorch_model.bin.
    for name in (filename, "pytorch_model.bin"):
        found = try_to_load_from_cache(repo_id, name)
        if isinstance(found, str):
            return found
    return None


@dataclass(frozen=True)
class Resolved:
    path: Path | None              # where the file was found; None when missing
    reason: str | None             # None when usable; else what to put where


# How reasons name each folder (see the module docstring). TORCH_HOME defaults to ~/.cache/torch,
# HF_HOME to ~/.cache/huggingface; docs/metrics.md lists both.
HOME_DISPLAY = {"pyiqa": "$TORCH_HOME/hub/pyiqa/", "torch_checkpoints": "$TORCH_HOME/hub/checkpoints/",
                "clip": "$TORCH_HOME/hub/clip/"}
HF_CACHE_DISPLAY = "$HF_HOME/hub/"
MIRROR_DISPLAY = f"${MIRROR_ENV}"


def resolve(wf: WeightFile) -> Resolved:
    """Find one weight file on disk without touching the network."""
    if wf.home.startswith("hf:"):
        repo_id = wf.home[3:]
        found = _hf_cached(repo_id, wf.name)
        if found:
            return Resolved(Path(found), None)
        return Resolved(None, f"weights missing: put {repo_id} ({wf.name}) in the Hugging Face cache "
                              f"{HF_CACHE_DISPLAY} (e.g. `huggingface-cli download {repo_id}`)")
    home = home_dir(wf.home)
    shown = HOME_DISPLAY[wf.home]
    mirror = mirror_dir()
    if mirror is not None and wf.path_kwarg and (mirror / wf.name).is_file():
        return Resolved(mirror / wf.name, None)
    if (home / wf.name).is_file():
        return Resolved(home / wf.name, None)
    if mirror is not None and (mirror / wf.name).is_file():
        return Resolved(None, f"weights misplaced: pyiqa reads {wf.name} only from {shown}, not from "
                              f"{MIRROR_DISPLAY}; link or copy it there")
    where = f"{MIRROR_DISPLAY} or {shown}" if wf.path_kwarg else shown
    return Resolved(None, f"weights missing: put {wf.name} in {where}")


def missing_reason(spec: MetricSpec) -> str | None:
    """None when every weight file of `spec` is on disk; else every missing file's reason."""
    reasons = [r.reason for r in map(resolve, spec.weights) if r.reason]
    return "; ".join(reasons) or None


def path_kwargs(spec: MetricSpec) -> dict:
    """pyiqa options that point it at the files we found, so it never looks elsewhere."""
    out = {}
    for wf in spec.weights:
        if wf.path_kwarg:
            res = resolve(wf)
            if res.path is not None:
                out[wf.path_kwarg] = str(res.path)
    return out
