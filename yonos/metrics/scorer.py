"""Score SR images with the protocol in registry.py. Missing weights make a metric `n/a` with a
reason; nothing here downloads, waits on the network, or drops a requested metric.

This is the one code path behind `yonos score`, `yonos evaluate` and the evaluate stage. It also holds
the greyscale rule of MATLAB's evaluation scripts (docs/data.md, Set14 `bridge`): an image whose ground
truth is stored single-channel is scored on its grey values (`size(im, 3) == 1` skips `rgb2ycbcr`),
not on Y = 16 + 219/255 grey, which reads 1.32 dB higher for the same error. Callers say which images
are grey (`grey=`); `yonos.metrics.pairing.stored_grey` decides it from the file, for every command."""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from yonos.metrics import registry

_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


@contextlib.contextmanager
def offline_hub():
    """Hugging Face offline mode while metrics are built: timm would otherwise re-check a cached
    file against the Hub (and wait on retries without a network). We have checked the files exist."""
    saved = {k: os.environ.get(k) for k in _OFFLINE_VARS}
    os.environ.update({k: "1" for k in _OFFLINE_VARS})
    constants = sys.modules.get("huggingface_hub.constants")
    saved_const = getattr(constants, "HF_HUB_OFFLINE", None)
    if constants is not None:  # the library read the variable at import; set what it reads now
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if constants is not None:
            constants.HF_HUB_OFFLINE = saved_const


def quantize_8bit(x: Tensor) -> Tensor:
    """Clamp to [0, 1] and round to 1/255, as the PNG a method would save: in-memory scores then
    equal the scores of the written files (and of published per-image values)."""
    return x.clamp(0, 1).mul(255).round().div(255)


class Scorer:
    """Build the requested pyiqa metrics once; score batches (per image) and folders (FID).

    `available[name]` is None when the metric is usable, else the reason it is `n/a`.
    `notes[name]` holds a reason for NaN values of the last call (e.g. image smaller than NIQE allows).
    Every NaN a call returns has a reason in one of the two.
    """

    def __init__(self, metrics: Sequence[str], *, device="cpu", border: int = 0, quantize: bool = True):
        self.metrics = list(dict.fromkeys(metrics))  # keep order, drop duplicates
        for name in self.metrics:
            registry.get(name)  # unknown names are a programming error: raise KeyError now
        if int(border) < 0:
            raise ValueError(f"border must be >= 0 pixels, got {border}")
        self.device = torch.device(device)
        self.border = int(border)           # pixels removed per side for PSNR/SSIM (scale, on classic sets)
        self.quantize = quantize
        self.available: dict[str, str | None] = {}
        self.notes: dict[str, str] = {}
        self._nets: dict[str, torch.nn.Module] = {}
        self._grey_nets: dict[str, torch.nn.Module] = {}  # built on first use: see grey_kwargs
        for name in self.metrics:
            self.available[name] = self._build(registry.get(name))

    # --- construction ---------------------------------------------------------------------

    def _build(self, spec: registry.MetricSpec) -> str | None:
        reason = registry.missing_reason(spec)  # checked first: pyiqa would start a download
        if reason:
            return reason
        kwargs = dict(spec.pyiqa_kwargs)
        if spec.crops_border and self.border:
            kwargs["crop_border"] = self.border
        kwargs.update(registry.path_kwargs(spec))
        try:
            import pyiqa

            with offline_hub(), contextlib.redirect_stdout(sys.stderr):  # pyiqa prints "Loading ..."
                net = pyiqa.create_metric(spec.pyiqa_name, device=self.device, **kwargs)
        except Exception as exc:  # noqa: BLE001 -- a broken file or an incompatible pyiqa: n/a with the reason
            return f"pyiqa could not build {spec.pyiqa_name}: {type(exc).__name__}: {_first_line(exc)}"
        self._nets[spec.name] = net.eval()
        return None

    def _grey_net(self, spec: registry.MetricSpec) -> torch.nn.Module:
        """The same pyiqa metric on the RGB channels as given: on a replicated grey image (R = G = B)
        that is the grey value itself, the MATLAB rule for single-channel ground truth."""
        if spec.name not in self._grey_nets:
            import pyiqa

            kwargs = grey_kwargs(spec)
            if spec.crops_border and self.border:
                kwargs["crop_border"] = self.border
            with offline_hub(), contextlib.redirect_stdout(sys.stderr):
                self._grey_nets[spec.name] = pyiqa.create_metric(spec.pyiqa_name, device=self.device, **kwargs).eval()
        return self._grey_nets[spec.name]

    def reason(self, name: str) -> str | None:
        """Why `name` has no value: missing weights, or a note from the last call."""
        return self.available.get(name) or self.notes.get(name)

    @property
    def image_metrics(self) -> list[str]:
        return [m for m in self.metrics if registry.get(m).level == "image"]

    @property
    def folder_metrics(self) -> list[str]:
        return [m for m in self.metrics if registry.get(m).level == "folder"]

    # --- scoring --------------------------------------------------------------------------

    @torch.no_grad()
    def score(self, sr: Tensor, hr: Tensor | None, *, grey: bool | Sequence[bool] = False) -> dict[str, Tensor]:
        """Per-image values, shape [N] float64, for every per-image metric; NaN where n/a.
        sr, hr: NCHW float in [0, 1] (values outside are clamped), same shape.
        grey: per image (or one bool for all), True when its ground truth is stored single-channel:
        Y-channel full-reference metrics (PSNR, SSIM) then use the grey values (module docstring)."""
        sr = _check_batch(sr, "sr")
        if hr is not None:
            hr = _check_batch(hr, "hr")
            if hr.shape != sr.shape:
                raise ValueError(f"sr {tuple(sr.shape)} and hr {tuple(hr.shape)} differ in shape")
        if self.quantize:
            sr = quantize_8bit(sr)
            hr = quantize_8bit(hr) if hr is not None else None
        n = sr.shape[0]
        grey_mask = torch.tensor([bool(grey)] * n if isinstance(grey, bool) else [bool(g) for g in grey])
        if grey_mask.numel() != n:
            raise ValueError(f"grey has {grey_mask.numel()} flags for {n} images")
        self.notes = {}
        out: dict[str, Tensor] = {}
        for name in self.image_metrics:
            spec = registry.get(name)
            if spec.reference == "full" and hr is None:
                raise ValueError(f"{name} is full-reference: pass hr, or drop it from the metrics")
            out[name] = self._score_one(spec, sr, hr, n, grey_mask)
            if torch.isnan(out[name]).any() and not self.reason(name):  # never an unexplained n/a
                self.notes[name] = f"pyiqa {spec.pyiqa_name} returned NaN (constant or degenerate image?)"
        return out

    def _score_one(self, spec: registry.MetricSpec, sr: Tensor, hr: Tensor | None, n: int,
                   grey_mask: Tensor) -> Tensor:
        nan = torch.full((n,), math.nan, dtype=torch.float64)
        if self.available[spec.name] is not None:
            return nan
        if spec.min_side and min(sr.shape[-2:]) < spec.min_side:
            self.notes[spec.name] = (
                f"image {sr.shape[-2]}x{sr.shape[-1]} is smaller than {spec.title}'s "
                f"{spec.min_side}x{spec.min_side} minimum"
            )
            return nan
        if spec.crops_border and 2 * self.border >= min(sr.shape[-2:]):
            self.notes[spec.name] = (f"border {self.border} px per side leaves nothing of a "
                                     f"{sr.shape[-2]}x{sr.shape[-1]} image; use a border below half its side")
            return nan
        grey_rule = uses_grey_rule(spec) and bool(grey_mask.any())
        try:
            values = self._run(self._nets[spec.name], spec, sr, hr).clone()
            if grey_rule:
                idx = grey_mask.nonzero().flatten()
                values[idx] = self._run(self._grey_net(spec), spec, sr[idx], hr[idx])
        except Exception as exc:  # noqa: BLE001 -- one metric failing must not lose the others
            self.notes[spec.name] = f"{spec.pyiqa_name} failed: {type(exc).__name__}: {_first_line(exc)}"
            return nan
        return values

    def _run(self, net, spec: registry.MetricSpec, sr: Tensor, hr: Tensor | None) -> Tensor:
        args = (sr.to(self.device),) + ((hr.to(self.device),) if spec.reference == "full" else ())
        return net(*args).detach().reshape(sr.shape[0]).to("cpu", torch.float64)

    @torch.no_grad()
    def score_folders(self, sr_dir: str | os.PathLike, hr_dir: str | os.PathLike) -> dict[str, float]:
        """Folder-level metrics (FID of the SR folder against the HR folder); NaN where n/a."""
        out: dict[str, float] = {}
        for name in self.folder_metrics:
            if self.available[name] is not None:
                out[name] = math.nan
                continue
            with contextlib.redirect_stdout(sys.stderr):
                value = self._nets[name](str(Path(sr_dir)), str(Path(hr_dir)), verbose=False)
            out[name] = float(value)
        return out


def uses_grey_rule(spec: registry.MetricSpec) -> bool:
    """Full-reference metrics computed on Y of YCbCr: MATLAB scores these on the grey values instead
    when the ground truth is single-channel."""
    return spec.reference == "full" and bool(spec.pyiqa_kwargs.get("test_y_channel"))


def grey_kwargs(spec: registry.MetricSpec) -> dict:
    """The metric's pyiqa settings without the Y conversion."""
    kwargs = {k: v for k, v in spec.pyiqa_kwargs.items() if k not in ("test_y_channel", "color_space")}
    return {**kwargs, "test_y_channel": False}


def _check_batch(x: Tensor, what: str) -> Tensor:
    if not torch.is_tensor(x) or x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{what} must be an NCHW RGB tensor, got {getattr(x, 'shape', type(x))}")
    return x.detach().float()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else ""
