"""``python -m csm_edu.resources list | update FILE.csv ...``: show or refresh the shipped files."""
import sys

from . import main

sys.exit(main())
