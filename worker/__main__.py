from worker.entry import main

raise SystemExit(main(prog="python -m worker"))
