"""`yonos download NAME...`: fetch registered datasets into data/<name>/ and baseline weights into
weights/<name>/ (resumable, verified against pinned sizes and sha256, replaced only by a verified copy)."""

from __future__ import annotations

import argparse

from yonos.errors import UserError


def register(subparsers) -> None:
    from yonos.data.sources import DATASETS, MIRROR_ENV

    p = subparsers.add_parser("download", help="fetch datasets into data/ (or copy them from a mirror folder)",
                              description=__doc__.splitlines()[0],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("names", nargs="*", metavar="NAME", help=f"datasets and weights: {', '.join(DATASETS)}")
    p.add_argument("--list", action="store_true", help="list the registry (sources, pins, licences) and exit")
    p.add_argument("--data-root", default="data", help="where datasets are installed (tracked by data.dvc)")
    p.add_argument("--weights-root", default="weights", help="where baseline weights are installed")
    p.add_argument("--source-dir", metavar="DIR", help=f"local mirror folder, tried first (else ${MIRROR_ENV})")
    p.add_argument("--archive", metavar="FILE", help="install one dataset from an already downloaded archive")
    p.add_argument("--allow-unpinned", action="store_true", help="accept sources without a pinned sha256")
    p.add_argument("--force", action="store_true",
                   help="replace an existing or incomplete copy (only once the new copy is complete and verified)")
    p.set_defaults(func=run)


def list_registry() -> None:
    from yonos.data.sources import DATASETS

    for d in DATASETS.values():
        src = d.sources[0]
        where = f"{d.category}; " if d.category != "dataset" else ""
        print(f"{d.name:<20} {d.title}\n{'':<20} {src.kind}: {src.location}\n"
              f"{'':<20} {src.pin_summary()}; {where}licence: {d.license}")


def run(args) -> int:
    from yonos.data.download import install, install_root
    from yonos.data.sources import dataset_info, is_complete

    if args.list:
        list_registry()
        return 0
    if not args.names:
        raise UserError("name at least one dataset, or use --list")
    if args.archive and len(args.names) != 1:
        raise UserError("--archive installs exactly one dataset; name one")
    infos = [dataset_info(name) for name in args.names]  # unknown names fail before any work
    for info in infos:
        existing = install_root(info, args.data_root, args.weights_root) / info.name
        already = is_complete(existing, info) and not args.force
        path = install(info.name, args.data_root, source_dir=args.source_dir, archive=args.archive,
                       allow_unpinned=args.allow_unpinned, force=args.force, weights_root=args.weights_root)
        print(f"{info.name}: {path}" + (" (already installed; --force replaces it)" if already else ""))
    return 0
