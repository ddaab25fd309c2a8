"""`platform metaclip-metadata`, the metaclip plugin's command: build MetaCLIP metadata
entries as a JSON list. Light: the builder (numpy, wordfreq) imports on run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from autoplat.core.errors import DataError
from autoplat.core.hookspecs import Command

WORDNET_DIR = Path("/usr/share/wordnet")  # Debian's wordnet-base
DEFAULT_MAX_ENTRIES = 500_000


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: give a whole number of at least 1")
    return value


def run(args: argparse.Namespace) -> int:
    """Write ``build_metadata``'s list as a JSON array."""
    from autoplat.plugins.scorers.metaclip import build_metadata

    out_path = Path(args.out)
    if not out_path.parent.is_dir():
        raise DataError(
            f"cannot write {out_path}: the folder {out_path.parent} does not exist; create it "
            "or choose another --out"
        )
    counts: dict[str, int] = {}
    entries = build_metadata(args.max_entries, args.wordnet_dir, counts)
    try:
        out_path.write_text(json.dumps(entries, ensure_ascii=False, indent=0) + "\n", "utf-8")
    except OSError as exc:
        raise DataError(f"cannot write {out_path}: {exc}; choose another --out") from None
    parts = ", ".join(f"{n:,} {name}" for name, n in counts.items())
    print(f"wrote {len(entries):,} entries to {out_path} ({parts})")
    return 0


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, metavar="FILE", help="the JSON file to write")
    p.add_argument(
        "--max-entries",
        type=_positive,
        default=DEFAULT_MAX_ENTRIES,
        metavar="N",
        help=f"at most N entries (default {DEFAULT_MAX_ENTRIES:,}, MetaCLIP's size)",
    )
    p.add_argument(
        "--wordnet-dir",
        default=str(WORDNET_DIR),
        metavar="DIR",
        help=f"WordNet's dict folder (default {WORDNET_DIR}, Debian's wordnet-base)",
    )


METADATA = Command(
    "metaclip-metadata",
    "build MetaCLIP metadata entries (WordNet + wordfreq) as a JSON list",
    "platform metaclip-metadata --out metadata.json --max-entries 50000",
    arguments,
    run,
    description="Build MetaCLIP's metadata: entries whose substring matches select and balance "
    "captions. From WordNet lemmas, wordfreq unigrams, PMI bigrams of WordNet's glosses and "
    "capitalized forms; use the file as the metaclip scorer's 'metadata'.",
)
