from receiver.entry import main

raise SystemExit(main(prog="python -m receiver"))
