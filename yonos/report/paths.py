"""How generated files name places: the way a user types them, never as the expanded path of the
machine that ran. Reports, tables and drift references are committed, so `/home/me/.cache/torch/...`
or `/tmp/xyz/...` in them is both a leak and wrong on every other machine.

`shown_path` turns one path into `runs/smoke/...` (inside the working folder), `$YONOS_PYIQA_WEIGHTS/...`,
`$TORCH_HOME/...` (the folder a known variable names), `~/...` (the home folder), or `…/name`;
`redact` applies it to every absolute path inside a free-text message (an exception's text, say).
The registry's reasons are already written this way (yonos/metrics/registry.py); `redact` is the
safety net for messages we do not word ourselves.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

# Variables whose folders a message may name, most specific first when two prefixes tie.
PATH_VARIABLES = ("YONOS_PYIQA_WEIGHTS", "YONOS_DATA_MIRROR", "YONOS_SD_DIR", "YONOS_SHARED_DIR", "TORCH_HOME",
                  "HF_HOME", "XDG_CACHE_HOME", "TMPDIR")

# An absolute POSIX path (not the tail of a URL, `n/a`, `1/255`, `repo/name` or an elided `…/name`), or
# a Windows one.
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~$}\\…-])/(?=[\w.~+-])[^\s'\"`()<>,;|*]*|\b[A-Za-z]:\\[^\s'\"`()<>,;|*]*")


def _prefixes() -> list[tuple[Path, str]]:
    """(folder, how to show it), longest folder first so the most specific name wins."""
    out = [(Path(os.path.abspath(os.environ[v])), f"${v}") for v in PATH_VARIABLES if os.environ.get(v)]
    out.append((Path.cwd(), ""))
    out.append((Path(tempfile.gettempdir()), "$TMPDIR"))  # what tempfile reads first, whether set or not
    out.append((Path.home(), "~"))
    out = [(folder, name) for folder, name in out if len(folder.parts) > 1]  # never the root itself
    return sorted(out, key=lambda p: len(p[0].parts), reverse=True)


def shown_path(path: str | os.PathLike) -> str:
    """`path` as a user would type it on any machine (see the module docstring)."""
    if re.match(r"[A-Za-z]:\\", str(path)):  # a Windows path, seen on a POSIX machine: keep the name
        return "…\\" + str(path).rstrip("\\").rsplit("\\", 1)[-1]
    p = Path(path)
    if not p.is_absolute():
        return p.as_posix()
    candidates = [Path(os.path.abspath(p))]  # as given, then through symlinks
    try:
        candidates.append(p.resolve())
    except OSError:
        pass
    for folder, name in _prefixes():
        for c in candidates:
            if c == folder or folder in c.parents:
                rest = c.relative_to(folder).as_posix()
                if not name:
                    return rest if rest != "." else "."
                return name if rest == "." else f"{name}/{rest}"
    return f"…/{p.name}" if p.name else "…"


def redact(text: str) -> str:
    """`text` with every absolute path replaced by its `shown_path`."""
    return ABSOLUTE_PATH.sub(lambda m: shown_path(m.group(0)), text)


def find_absolute_paths(text: str) -> list[str]:
    """Absolute paths left in `text` (for tests and checks over generated files)."""
    return ABSOLUTE_PATH.findall(text)
