import os

from receiver.entry import main
from shared.lifeline import PROG_ENV

if __name__ == "__main__":
    # A supervisor (`rtt serve`) names itself, so errors read `rtt serve: ...`.
    raise SystemExit(main(prog=os.environ.pop(PROG_ENV, "python -m receiver")))
