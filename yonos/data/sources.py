"""Registry of downloadable data and weights: name -> where it comes from, how it is pinned, its licence.

Every dataset lands in `data/<name>/<folder>/` (e.g. `data/realsr/lr`, `data/set5/hr`); baseline
weights (category "weights") land in `weights/<name>/`. Sources are tried by `yonos download`; a local
mirror (`--source-dir` or YONOS_DATA_MIRROR) comes first, so air-gapped clusters and pre-downloaded
copies never touch the network.

Pinning. An archive (URL or Hub file) is pinned by its size and sha256, checked before anything is
extracted. A per-file source (`files`) pins every file by size and sha256; each file is downloaded and
checked, and a mirror copy is checked against the same hashes. The pin values live in committed TSV
files under `yonos/data/pins/` (copied from their published sources, named in each file's header).
An entry that cannot be pinned says why (`unpinned_reason`); `yonos download` refuses it unless
`--allow-unpinned`, then prints the sha256 to record.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from yonos.errors import UserError

MIRROR_ENV = "YONOS_DATA_MIRROR"  # a folder laid out like `DatasetInfo.mirror` below
PINS_DIR = Path(__file__).resolve().parent / "pins"


@dataclass(frozen=True)
class FilePin:
    """One file of a per-file source: where it goes (relative to the installed folder) and what it is."""

    path: str  # e.g. "hr/img_001.png"; for a Hub source also the file's path inside the repo
    size: int | None  # bytes; None when unpublished
    sha256: str | None  # None when unpublished (the file is then pinned by size only)
    url: str | None = None  # per-file URL; None for a Hub file (repo + path)


@dataclass(frozen=True)
class Source:
    kind: str  # "url": HTTP(S) archive or files; "hf": Hugging Face Hub file(s); "manual"
    location: str  # URL, Hub repo id, or (manual) the page to fetch it from by hand
    sha256: str | None = None  # of the downloaded archive, checked before anything is extracted
    size: int | None = None  # of the downloaded archive, in bytes
    revision: str | None = None  # Hub revision (None: the default branch; the sha256 pins the bytes)
    filename: str | None = None  # archive inside the Hub repo
    repo_type: str = "dataset"  # Hub repo type: dataset | model
    archive: str | None = "zip"  # zip | tar | None (the file is used as is)
    # (folder inside the archive, folder under data/<name>): which members become which folder
    layout: tuple[tuple[str, str], ...] = ()
    files: tuple[FilePin, ...] = ()  # per-file source: every file fetched and verified on its own
    unpinned_reason: str = ""  # why no pin exists (shown by `yonos download --list`)

    @property
    def pinned(self) -> bool:
        """Every byte installed from this source is checked against a published sha256."""
        if self.kind == "manual":
            return False
        if self.files:
            return all(f.sha256 for f in self.files)
        return bool(self.sha256)

    def pin_summary(self) -> str:
        """One phrase for `yonos download --list`: how (or why not) this source is pinned."""
        if self.kind == "manual":
            return f"not downloadable: {self.unpinned_reason or 'fetch by hand'}"
        if self.files:
            hashed = sum(1 for f in self.files if f.sha256)
            if hashed == len(self.files):
                return f"pinned: {hashed} file{'s' if hashed > 1 else ''} by sha256"
            return (f"PARTLY PINNED: {hashed} of {len(self.files)} files by sha256, the others by size only "
                    f"({self.unpinned_reason or 'no published hash'})")
        if self.sha256:
            return "pinned: archive size + sha256" if self.size else "pinned: archive sha256"
        return f"UNPINNED: {self.unpinned_reason or 'no published checksum'}"


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    title: str
    folders: tuple[str, ...]  # sub-folders a complete copy has: ("hr",) or ("lr", "hr"); () = the pinned files
    mirror: str  # path of this dataset inside a mirror folder
    sources: tuple[Source, ...]
    license: str
    citation: str
    notes: str = ""
    size_hint: str = ""
    category: str = "dataset"  # "dataset" -> data/<name>; "weights" -> weights/<name>
    extra: dict = field(default_factory=dict)

    @property
    def file_pins(self) -> tuple[FilePin, ...]:
        """The per-file pins of the first source (empty for archive and manual sources)."""
        return self.sources[0].files if self.sources else ()


# ---------------------------------------------------------------------------------------------
# Pin tables (committed TSV files; never the developers' shared folder)


def _read_tsv(name: str) -> list[dict]:
    with open(PINS_DIR / name, newline="") as f:
        return list(csv.DictReader((line for line in f if not line.startswith("#")), delimiter="\t"))


def _int(value: str) -> int | None:
    return None if value in ("", "-") else int(value)


@cache
def div2k_pin(filename: str) -> tuple[int, str]:
    """(size, sha256) of a DIV2K archive, from pins/div2k.tsv (published by TensorFlow Datasets)."""
    rows = {r["file"]: r for r in _read_tsv("div2k.tsv")}
    return int(rows[filename]["bytes"]), rows[filename]["sha256"]


# folder in train291_b100.tsv -> (registry entry, folder under data/<entry>)
_TRAIN291_B100 = {"train291/t91": ("train291", "t91"), "train291/bsd200": ("train291", "bsd200"),
                  "classic/b100": ("b100", "hr")}


@cache
def file_pins(entry: str) -> tuple[FilePin, ...]:
    """Per-file pins of `entry`: URL files from pins/train291_b100.tsv, Hub files from pins/hf_files.tsv."""
    pins = []
    for r in _read_tsv("train291_b100.tsv"):
        name, sub = _TRAIN291_B100[r["local_folder"]]
        if name == entry:
            pins.append(FilePin(f"{sub}/{r['file']}", int(r["bytes"]), r["sha256"], url=r["url"]))
    for r in _read_tsv("hf_files.tsv"):
        if r["entry"] == entry:
            pins.append(FilePin(r["file"], _int(r["bytes"]), None if r["sha256"] == "-" else r["sha256"]))
    return tuple(pins)


@cache
def hf_pin(entry: str) -> dict:
    """The single Hub file row of `entry` in pins/hf_files.tsv (an archive)."""
    (row,) = [r for r in _read_tsv("hf_files.tsv") if r["entry"] == entry]
    return row


EDSR_BENCHMARK = "https://cv.snu.ac.kr/research/EDSR/benchmark.tar"  # Set5/Set14/B100/Urban100 HR + LR
STABLESR_TESTSETS = "Iceclear/StableSR-TestSets"  # HF dataset repo released with StableSR
JINY_COMMIT = "jiny2001/dcscn-super-resolution@d382bc30"  # where the per-file T91/BSD200/B100 pins point
NO_EDSR_HASH = "EDSR's benchmark.tar has no published checksum"


def _div2k(name: str, filename: str, folder: str, title: str, size_hint: str) -> DatasetInfo:
    size, sha = div2k_pin(filename)
    return DatasetInfo(
        name, title, ("hr",), f"div2k/{name.removeprefix('div2k_')}",
        (Source("url", f"https://data.vision.ee.ethz.ch/cvl/DIV2K/{filename}", sha256=sha, size=size,
                layout=((folder, "hr"),)),),
        license="academic research only (NTIRE 2017 terms)",
        citation="Agustsson & Timofte, NTIRE 2017 Challenge on Single Image Super-Resolution, CVPRW 2017",
        notes="size and sha256 as published by TensorFlow Datasets (div2k builder)",
        size_hint=size_hint,
    )


def _stablesr_testset(name: str, folder: str, lr: str, hr: str, title: str, license: str, citation: str,
                      notes: str = "") -> DatasetInfo:
    """One set of StableSR's released test-set archive (a single pinned zip holds all of them)."""
    pin = hf_pin("stablesr_testsets")
    return DatasetInfo(
        name, title, ("lr", "hr"), name,
        (Source("hf", STABLESR_TESTSETS, sha256=pin["sha256"], size=int(pin["bytes"]), filename=pin["file"],
                layout=((f"{folder}/{lr}", "lr"), (f"{folder}/{hr}", "hr"))),),
        license=license, citation=citation,
        notes=(notes + " " if notes else "") + "The archive (3.1 GB) holds every StableSR test set; it is "
              "downloaded once and reused. Member folders follow the users' scripts of the release.",
        size_hint="3.1 GB archive",
    )


def _classic(name: str, folder: str, title: str, citation: str) -> DatasetInfo:
    return DatasetInfo(
        name=name,
        title=title,
        folders=("hr",),
        mirror=f"classic/{name}",
        sources=(Source("url", EDSR_BENCHMARK, archive="tar", layout=((f"benchmark/{folder}/HR", "hr"),),
                        unpinned_reason=NO_EDSR_HASH),),
        license="research use; see the original authors' terms",
        citation=citation,
        notes="HR only; LR is made by MATLAB bicubic (classic protocol).",
    )


def _weights(name: str, title: str, repo: str, license: str, citation: str, size_hint: str,
             unpinned_reason: str = "") -> DatasetInfo:
    return DatasetInfo(
        name, title, (), f"weights/{name}",
        (Source("hf", repo, repo_type="model", archive=None, files=file_pins(name),
                unpinned_reason=unpinned_reason),),
        license=license, citation=citation, size_hint=size_hint, category="weights",
    )


DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in (
        _div2k("div2k_train_hr", "DIV2K_train_HR.zip", "DIV2K_train_HR", "DIV2K training HR (800 images)",
               "3.5 GB"),
        _div2k("div2k_valid_hr", "DIV2K_valid_HR.zip", "DIV2K_valid_HR", "DIV2K validation HR (100 images)",
               "449 MB"),
        DatasetInfo(
            "flickr2k", "Flickr2K HR (2,650 images, optional)", ("hr",), "flickr2k",
            (Source("url", "https://cv.snu.ac.kr/research/EDSR/Flickr2K.tar", archive="tar",
                    layout=(("Flickr2K/Flickr2K_HR", "hr"),),
                    unpinned_reason="EDSR's Flickr2K.tar has no published checksum"),),
            license="Flickr images under their own licences; research use",
            citation="Lim et al., EDSR, CVPRW 2017",
            size_hint="20 GB",
        ),
        DatasetInfo(
            "train291", "T91 + BSD200, the classic '291' SR training set (HR)", ("t91", "bsd200"), "train291",
            (Source("url", JINY_COMMIT, archive=None, files=file_pins("train291")),),
            license="research use (T91: Yang et al.; BSD200: Berkeley Segmentation Dataset terms)",
            citation="Yang et al., Image Super-Resolution via Sparse Representation, TIP 2010; "
                     "Martin et al., ICCV 2001",
            notes="291 files, each pinned by sha256 at a fixed commit.",
            size_hint="45 MB",
        ),
        _stablesr_testset("realsr", "RealSRVal_crop128", "test_LR", "test_HR",
                          "RealSR test crops, StableSR release (100 pairs, x4, 128->512)",
                          "research use (RealSR terms)",
                          "Cai et al., Toward Real-World Single Image Super-Resolution, ICCV 2019; "
                          "Wang et al., StableSR, IJCV 2024"),
        _stablesr_testset("drealsr", "DrealSRVal_crop128", "test_LR", "test_HR",
                          "DRealSR test crops, StableSR release (93 pairs, x4, 128->512)",
                          "research use (DRealSR terms)",
                          "Wei et al., Component Divide-and-Conquer for Real-World Image Super-Resolution, "
                          "ECCV 2020"),
        _stablesr_testset("div2k_val_stablesr", "DIV2K_V2_val", "lq", "gt",
                          "DIV2K-Val 3k, StableSR release (x4 Real-ESRGAN LR)",
                          "academic research only (DIV2K terms)", "Wang et al., StableSR, IJCV 2024",
                          notes="Preferred over the local generator (yonos.data.div2k_val) whenever present."),
        DatasetInfo(
            "realsr_v3", "RealSR v3 full images (Canon + Nikon)", ("lr", "hr"), "realsr_v3",
            (Source("manual", "https://github.com/csjcai/RealSR",
                    unpinned_reason="distributed through Google Drive / Baidu, no checksum published"),),
            license="research use", citation="Cai et al., ICCV 2019",
            notes="Distributed through Google Drive / Baidu; fetch by hand.",
        ),
        DatasetInfo(
            "drealsr_full", "DRealSR full test set", ("lr", "hr"), "drealsr_full",
            (Source("manual", "https://github.com/xiezw5/Component-Divide-and-Conquer-for-Real-World-Image-Super-Resolution",
                    unpinned_reason="distributed through Google Drive / Baidu, no checksum published"),),
            license="research use", citation="Wei et al., ECCV 2020",
            notes="Distributed through Google Drive / Baidu; fetch by hand.",
        ),
        _classic("set5", "Set5", "Set5 (5 images)", "Bevilacqua et al., BMVC 2012"),
        _classic("set14", "Set14", "Set14 (14 images)", "Zeyde et al., Curves and Surfaces 2010"),
        DatasetInfo(
            "b100", "B100 / BSD100 (100 images)", ("hr",), "classic/b100",
            (Source("url", JINY_COMMIT, archive=None, files=file_pins("b100")),),
            license="research use (Berkeley Segmentation Dataset terms)",
            citation="Martin et al., ICCV 2001",
            notes="HR only; LR is made by MATLAB bicubic (classic protocol). 100 files, each pinned by sha256.",
        ),
        _classic("urban100", "Urban100", "Urban100 (100 images)", "Huang et al., CVPR 2015"),
        DatasetInfo(
            "manga109", "Manga109 (109 images)", ("hr",), "classic/manga109",
            (Source("manual", "http://www.manga109.org/en/download.html",
                    unpinned_reason="requires a request form; no public checksum"),),
            license="academic use after registration (Manga109 terms)",
            citation="Matsui et al., Multimedia Tools and Applications 2017",
            notes="Requires a request form; fetch by hand.",
        ),
        # Baseline weights (installed into weights/<name>/, for the LDM-SR and StableSR baselines)
        _weights("ldm_sr_x4", "LDM-SR x4 (CompVis BSR model), diffusers format",
                 "CompVis/ldm-super-resolution-4x-openimages", "Apache-2.0", "Rombach et al., CVPR 2022",
                 "676 MB", unpinned_reason="the Hub publishes sha256 only for the two LFS weight files"),
        _weights("stablesr", "StableSR (SD 2.1-512base fine-tune) + CFW VQGAN", "Iceclear/StableSR",
                 "S-Lab License 1.0 (non-commercial)", "Wang et al., StableSR, IJCV 2024", "7.4 GB"),
        _weights("stablesr_turbo", "StableSR turbo (4 steps) + CFW VQGAN", "Iceclear/StableSR",
                 "S-Lab License 1.0 (non-commercial)", "Wang et al., StableSR, IJCV 2024", "7.4 GB"),
        _weights("stablesr_ldm_x4", "StableSR's LDM-SR x4 baseline (fine-tuned LDM)", "Iceclear/StableSR",
                 "S-Lab License 1.0 (non-commercial)", "Wang et al., StableSR, IJCV 2024", "2.0 GB"),
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


def pinned_path(folder: Path, info: DatasetInfo, rel: str) -> Path:
    """Where the pinned file `rel` ("hr/img_001.png") is in `folder`, allowing a flat HR-only copy."""
    first, _, rest = rel.partition("/")
    return subfolder(folder, info, first) / rest if rest and first in info.folders else folder / rel


def is_complete(folder: Path, info: DatasetInfo) -> bool:
    """True when every expected sub-folder exists and holds at least one file; for an entry without
    sub-folders (weights), when every pinned file exists. A hand-placed copy of a per-file dataset
    with other file names still counts (it is the user's data); installs check the pins themselves."""
    if not info.folders:
        return folder.is_dir() and all(pinned_path(folder, info, f.path).is_file() for f in info.file_pins)
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
    where = (f"{local}/{{{','.join(info.folders)}}}" if len(info.folders) > 1
             else f"{local}/{info.folders[0]}" if info.folders else str(local))
    hint = f" or set {MIRROR_ENV} to a folder containing {info.mirror}/"
    raise UserError(f"dataset {name!r} not found: run `yonos download {name}`, put the images in {where}{hint}")
