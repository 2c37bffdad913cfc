from receiver.entry import main

if __name__ == "__main__":
    raise SystemExit(main(prog="python -m receiver"))
