"""Published numbers placed beside ours, as data (PAPER.md §4). Never mixed into our results: the
tables mark these rows "published" and cite SOURCE."""

from __future__ import annotations

SOURCE = ("OSEDiff (Wu et al., NeurIPS 2024, arXiv 2406.08177) Table 1: StableSR protocol, pyiqa; "
          "the StableSR rows match the StableSR paper")
SOURCE_EDGE = "Edge-SD-SR (same authors as YONOS-SR): second-hand quote recorded in PAPER.md §4"

COLUMNS = ("psnr", "ssim", "lpips", "dists", "fid", "niqe", "musiq", "maniqa", "clipiqa")

# dataset -> [(method, steps, {metric: value}, source)]; dataset keys match results.csv.
_OSEDIFF_TABLE = {
    "div2k_val": [
        ("StableSR", 200, (23.26, 0.5726, 0.3113, 0.2048, 24.44, 4.7581, 65.92, 0.6192, 0.6771)),
        ("ResShift", 15, (24.65, 0.6181, 0.3349, 0.2213, 36.11, 6.8212, 61.09, 0.5454, 0.6071)),
        ("SinSR", 1, (24.41, 0.6018, 0.3240, 0.2066, 35.57, 6.0159, 62.82, 0.5386, 0.6471)),
        ("OSEDiff", 1, (23.72, 0.6108, 0.2941, 0.1976, 26.32, 4.7097, 67.97, 0.6148, 0.6683)),
    ],
    "realsr": [
        ("StableSR", 200, (24.70, 0.7085, 0.3018, 0.2288, 128.51, 5.9122, 65.78, 0.6221, 0.6178)),
        ("OSEDiff", 1, (25.15, 0.7341, 0.2921, 0.2128, 123.49, 5.6476, 69.09, 0.6326, 0.6693)),
    ],
    "drealsr": [
        ("StableSR", 200, (28.03, 0.7536, 0.3284, 0.2269, 148.98, 6.5239, 58.51, 0.5601, 0.6356)),
        ("OSEDiff", 1, (27.92, 0.7835, 0.2968, 0.2165, 135.30, 6.4902, 64.65, 0.5899, 0.6963)),
    ],
}

SOURCE_CCSR = ("CCSR (Sun et al., arXiv 2401.00877, early version) Table 1: StableSR protocol, mean over repeated "
               "runs; its LDM-SR checkpoint is not named (probably StableSR's ldmsr4x_finetune_119)")
# LDM-SR at 200 steps, the "LDM" of StableSR's tables (BASELINES.md §4.2); CCSR gives no MANIQA.
_CCSR_LDMSR = {  # psnr, ssim, lpips, dists, fid, niqe, clipiqa, musiq
    "div2k_val": (23.36, 0.5758, 0.3227, 0.1961, 36.21, 5.53, 0.6242, 62.38),
    "realsr": (25.49, 0.7159, 0.3129, 0.2218, 132.32, 6.41, 0.5906, 60.18),
    "drealsr": (28.09, 0.7487, 0.3352, 0.2259, 157.31, 7.03, 0.5668, 53.72),
}
_CCSR_COLUMNS = ("psnr", "ssim", "lpips", "dists", "fid", "niqe", "clipiqa", "musiq")

_EDGE_SD_SR = ("div2k_val", "Edge-SD-SR", 1,
               {"psnr": 24.10, "ssim": 0.617, "lpips": 0.249, "fid": 25.37, "musiq": 69.58})


def published_rows(dataset: str) -> list[dict]:
    """[{"method", "steps", "values": {metric: value}, "source"}] for one dataset (may be empty)."""
    rows = [
        {"method": m, "steps": s, "values": dict(zip(COLUMNS, vals, strict=True)), "source": SOURCE}
        for m, s, vals in _OSEDIFF_TABLE.get(dataset, [])
    ]
    if dataset in _CCSR_LDMSR:
        rows.append({"method": "LDM-SR", "steps": 200, "source": SOURCE_CCSR,
                     "values": dict(zip(_CCSR_COLUMNS, _CCSR_LDMSR[dataset], strict=True))})
    ds, method, steps, values = _EDGE_SD_SR
    if dataset == ds:
        rows.append({"method": method, "steps": steps, "values": values, "source": SOURCE_EDGE})
    return rows
