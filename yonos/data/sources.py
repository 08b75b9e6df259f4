"""Dataset registry: name -> where the data comes from, how it is pinned and laid out, its licence.

Every dataset lands in `data/<name>/<folder>/` (e.g. `data/realsr/lr`, `data/set5/hr`). Sources are
tried in order by `yonos download`; a local mirror (`--source-dir` or YONOS_DATA_MIRROR) comes first,
so air-gapped clusters and pre-downloaded copies never touch the network.

Pinning: a URL source is pinned by `sha256` of the archive, an HF source by `revision` (a commit).
Sources whose hash is still None were registered without network access to compute it; `yonos
download` refuses them unless `--allow-unpinned`, then prints the sha256 to paste here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from yonos.errors import UserError

MIRROR_ENV = "YONOS_DATA_MIRROR"  # a folder laid out like `DatasetInfo.mirror` below


@dataclass(frozen=True)
class Source:
    kind: str  # "url": an HTTP(S) file; "hf": a file of a Hugging Face hub dataset repo; "manual"
    location: str  # URL, HF repo id, or (manual) the page to fetch it from by hand
    sha256: str | None = None  # of the downloaded file, checked before anything is extracted
    revision: str | None = None  # HF commit; None = unpinned
    filename: str | None = None  # file inside the HF repo
    archive: str | None = "zip"  # zip | tar | None (the file is used as is)
    # (folder inside the archive, folder under data/<name>): which members become which folder
    layout: tuple[tuple[str, str], ...] = ()

    @property
    def pinned(self) -> bool:
        return bool(self.sha256) or (self.kind == "hf" and bool(self.revision))


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    title: str
    folders: tuple[str, ...]  # sub-folders a complete copy has: ("hr",) or ("lr", "hr")
    mirror: str  # path of this dataset inside a mirror folder
    sources: tuple[Source, ...]
    license: str
    citation: str
    notes: str = ""
    size_hint: str = ""
    extra: dict = field(default_factory=dict)


EDSR_BENCHMARK = "https://cv.snu.ac.kr/research/EDSR/benchmark.tar"  # Set5/Set14/B100/Urban100 HR + LR
STABLESR_TESTSETS = "Iceclear/StableSR-TestSets"  # HF dataset repo released with StableSR


def _classic(name: str, folder: str, title: str, citation: str) -> DatasetInfo:
    return DatasetInfo(
        name=name,
        title=title,
        folders=("hr",),
        mirror=f"classic/{name}",
        sources=(Source("url", EDSR_BENCHMARK, archive="tar", layout=((f"benchmark/{folder}/HR", "hr"),)),),
        license="research use; see the original authors' terms",
        citation=citation,
        notes="HR only; LR is made by MATLAB bicubic (classic protocol).",
    )


DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in (
        DatasetInfo(
            "div2k_train_hr", "DIV2K training HR (800 images)", ("hr",), "div2k/train_hr",
            (Source("url", "https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_train_HR.zip",
                    layout=(("DIV2K_train_HR", "hr"),)),),
            license="academic research only (NTIRE 2017 terms)",
            citation="Agustsson & Timofte, NTIRE 2017 Challenge on Single Image Super-Resolution, CVPRW 2017",
            size_hint="3.5 GB",
        ),
        DatasetInfo(
            "div2k_valid_hr", "DIV2K validation HR (100 images)", ("hr",), "div2k/valid_hr",
            (Source("url", "https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_valid_HR.zip",
                    layout=(("DIV2K_valid_HR", "hr"),)),),
            license="academic research only (NTIRE 2017 terms)",
            citation="Agustsson & Timofte, CVPRW 2017",
            size_hint="449 MB",
        ),
        DatasetInfo(
            "flickr2k", "Flickr2K HR (2,650 images, optional)", ("hr",), "flickr2k",
            (Source("url", "https://cv.snu.ac.kr/research/EDSR/Flickr2K.tar", archive="tar",
                    layout=(("Flickr2K/Flickr2K_HR", "hr"),)),),
            license="Flickr images under their own licences; research use",
            citation="Lim et al., EDSR, CVPRW 2017",
            size_hint="20 GB",
        ),
        DatasetInfo(
            "realsr", "RealSR test crops, StableSR release (100 pairs, x4, 128->512)", ("lr", "hr"), "realsr",
            (Source("hf", STABLESR_TESTSETS, filename="RealSRVal_crop128.zip",
                    layout=(("RealSRVal_crop128/test_LR", "lr"), ("RealSRVal_crop128/test_HR", "hr"))),),
            license="research use (RealSR terms)",
            citation="Cai et al., Toward Real-World Single Image Super-Resolution, ICCV 2019; "
                     "Wang et al., StableSR, IJCV 2024",
            notes="HF file name and layout must be confirmed against the repo before pinning a revision.",
        ),
        DatasetInfo(
            "drealsr", "DRealSR test crops, StableSR release (93 pairs, x4, 128->512)", ("lr", "hr"), "drealsr",
            (Source("hf", STABLESR_TESTSETS, filename="DrealSRVal_crop128.zip",
                    layout=(("DrealSRVal_crop128/test_LR", "lr"), ("DrealSRVal_crop128/test_HR", "hr"))),),
            license="research use (DRealSR terms)",
            citation="Wei et al., Component Divide-and-Conquer for Real-World Image Super-Resolution, ECCV 2020",
            notes="HF file name and layout must be confirmed against the repo before pinning a revision.",
        ),
        DatasetInfo(
            "div2k_val_stablesr", "DIV2K-Val 3k, StableSR release (x4 Real-ESRGAN LR)", ("lr", "hr"),
            "div2k_val_stablesr",
            (Source("hf", STABLESR_TESTSETS, filename="DIV2K_V2_val.zip",
                    layout=(("DIV2K_V2_val/lq", "lr"), ("DIV2K_V2_val/gt", "hr"))),),
            license="academic research only (DIV2K terms)",
            citation="Wang et al., StableSR, IJCV 2024",
            notes="Preferred over the local generator (yonos.data.div2k_val) whenever present.",
        ),
        DatasetInfo(
            "realsr_v3", "RealSR v3 full images (Canon + Nikon)", ("lr", "hr"), "realsr_v3",
            (Source("manual", "https://github.com/csjcai/RealSR"),),
            license="research use", citation="Cai et al., ICCV 2019",
            notes="Distributed through Google Drive / Baidu; fetch by hand.",
        ),
        DatasetInfo(
            "drealsr_full", "DRealSR full test set", ("lr", "hr"), "drealsr_full",
            (Source("manual", "https://github.com/xiezw5/Component-Divide-and-Conquer-for-Real-World-Image-Super-Resolution"),),
            license="research use", citation="Wei et al., ECCV 2020",
            notes="Distributed through Google Drive / Baidu; fetch by hand.",
        ),
        _classic("set5", "Set5", "Set5 (5 images)", "Bevilacqua et al., BMVC 2012"),
        _classic("set14", "Set14", "Set14 (14 images)", "Zeyde et al., Curves and Surfaces 2010"),
        _classic("b100", "B100", "B100 / BSD100 (100 images)", "Martin et al., ICCV 2001"),
        _classic("urban100", "Urban100", "Urban100 (100 images)", "Huang et al., CVPR 2015"),
        DatasetInfo(
            "manga109", "Manga109 (109 images)", ("hr",), "classic/manga109",
            (Source("manual", "http://www.manga109.org/en/download.html"),),
            license="academic use after registration (Manga109 terms)",
            citation="Matsui et al., Multimedia Tools and Applications 2017",
            notes="Requires a request form; fetch by hand.",
        ),
    )
}


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


def mirror_dir(source_dir: str | os.PathLike | None = None) -> Path | None:
    """The mirror folder: the explicit parameter first, then $YONOS_DATA_MIRROR, else None."""
    value = source_dir or os.environ.get(MIRROR_ENV)
    return Path(value).expanduser() if value else None


def subfolder(folder: Path, info: DatasetInfo, sub: str) -> Path:
    """folder/sub; an HR-only set may also keep its images flat in `folder` (as classic/set5/*.png)."""
    if info.folders == ("hr",) and sub == "hr" and not (folder / sub).is_dir():
        return folder
    return folder / sub


def is_complete(folder: Path, info: DatasetInfo) -> bool:
    """True when every expected sub-folder exists and holds at least one file."""
    subs = [subfolder(folder, info, f) for f in info.folders]
    return all(d.is_dir() and any(p.is_file() for p in d.iterdir()) for d in subs)


def locate(name: str, data_root: str | os.PathLike = "data", source_dir=None) -> Path:
    """Folder holding dataset `name`: data/<name> if complete, else the mirror copy; else a UserError
    naming what to download and where to put it."""
    info = dataset_info(name)
    local = Path(data_root) / name
    if is_complete(local, info):
        return local
    mirror = mirror_dir(source_dir)
    if mirror is not None and is_complete(mirror / info.mirror, info):
        return mirror / info.mirror
    where = f"{local}/{{{','.join(info.folders)}}}" if len(info.folders) > 1 else f"{local}/{info.folders[0]}"
    hint = f" or set {MIRROR_ENV} to a folder containing {info.mirror}/"
    raise UserError(f"dataset {name!r} not found: run `yonos download {name}`, put the images in {where}{hint}")
