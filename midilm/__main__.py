"""`python -m midilm train ...`: the `midilm` command without its console script (e.g. in an editable install
made before it existed)."""

from midilm.commands import main

if __name__ == "__main__":
    main()
