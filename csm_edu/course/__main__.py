"""``python -m csm_edu.course workspace DIR [--solutions] [--force] [--source NOTEBOOKS]``."""
import argparse
import sys
from typing import Optional, Sequence

from .workspace import write_workspace


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m csm_edu.course", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    ws = commands.add_parser("workspace", help="write the student copy of the lessons (or, with --solutions, the teacher copy)")
    ws.add_argument("folder", help="the folder to write the lessons into (new or empty)")
    ws.add_argument("--solutions", action="store_true", help="keep the solutions (the teacher version)")
    ws.add_argument("--force", action="store_true", help="overwrite the lessons in a non-empty folder")
    ws.add_argument("--source", default=None, help="the lessons to copy (default: the repository's notebooks/)")
    args = parser.parse_args(argv)
    try:
        written = write_workspace(args.folder, solutions=args.solutions, force=args.force, source=args.source)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    kind = "teacher copy (with solutions)" if args.solutions else "student copy"
    print(f"wrote the {kind} of {len(written)} lessons to {args.folder}; open them with: jupyter lab {args.folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
