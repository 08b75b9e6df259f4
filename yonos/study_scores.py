"""The study's per-image scores, kept in git beside its report so the study outlives the machine that ran it.

An arm's runs (runs/study/<arm>/) are hours of training and gigabytes of checkpoints, gitignored and local to one
machine; the report is made from their per-image scores alone. So `python -m yonos.study run` and `report` file
each run's scores here (reports/claims/scores/<name>.csv.gz, <name>.json) and the report reads a run from its
folder when there is one, else from here: a study spread over sessions on different machines adds up.

What is filed: the rows the report reads (the study's step counts and METRICS), with the run's params identity (a stored
run made under other params is stale, as a run folder is), the wall time of the stages it ran, and a digest of
the scores of each run it was made against (the main run, or for a replicate arm its seed arm): it linked their
models, so it is paired only with those same runs. gzip here is Python's own, with a fixed header time, so the
same scores give the same bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from pathlib import Path

import pandas as pd

from yonos.io import atomic_path, write_json

COLUMNS = ("variant", "dataset", "steps", "metric", "id", "value")  # what the report's pairing reads


def canonical(per_image: pd.DataFrame, *, steps, metrics) -> pd.DataFrame:
    """The rows and columns the study reads (its step counts, bicubic's 0 among them, and metrics), in a fixed
    order, values as evaluate writes them (%.6g)."""
    df = per_image[per_image["steps"].isin(list(steps)) & per_image["metric"].isin(list(metrics))]
    df = df[list(COLUMNS)].astype({"id": str, "steps": int})
    return df.sort_values(["dataset", "variant", "steps", "metric", "id"], kind="stable").reset_index(drop=True)


def _csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False, float_format="%.6g").encode()


def digest(frame: pd.DataFrame) -> str:
    """sha256 of a canonical frame's CSV text: the same scores, read from a run folder or from here, agree."""
    return hashlib.sha256(_csv_bytes(frame)).hexdigest()


def paths(folder: Path, name: str) -> tuple[Path, Path]:
    return folder / f"{name}.csv.gz", folder / f"{name}.json"


def save(folder: Path, name: str, frame: pd.DataFrame, meta: dict) -> None:
    """File a run's canonical scores and what they were made under (`meta`: identity, seconds, paired_with)."""
    csv_path, json_path = paths(folder, name)
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, filename="") as gz:
        gz.write(_csv_bytes(frame))
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(csv_path) as tmp:
        Path(tmp).write_bytes(buffer.getvalue())
    write_json(json_path, {**meta, "rows": len(frame), "sha256": digest(frame)})


def load(folder: Path, name: str) -> tuple[pd.DataFrame, dict] | None:
    """A filed run's scores and meta; None when it was never filed."""
    csv_path, json_path = paths(folder, name)
    if not (csv_path.is_file() and json_path.is_file()):
        return None
    with gzip.open(csv_path, "rb") as f:
        frame = pd.read_csv(f, dtype={"id": str})
    return frame, json.loads(json_path.read_text())
