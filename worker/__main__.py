import os

from shared.lifeline import PROG_ENV
from worker.entry import main

# A supervisor (`rtt serve`) names itself, so errors read `rtt serve: ...`.
raise SystemExit(main(prog=os.environ.pop(PROG_ENV, "python -m worker")))
