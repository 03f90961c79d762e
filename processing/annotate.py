"""Annotate every region of every image of a folder or dataset with an MLLM (cached, resumable).

    python processing/annotate.py --model DIR --data DIR --out DIR
    accelerate launch --num_processes 2 processing/annotate.py --model DIR --data DIR --out DIR

Thin wrapper over ``modeling_rsfiqa.cli_annotate`` (the same as ``rsfiqa annotate``).
"""

import sys

from modeling_rsfiqa.cli_annotate import main

if __name__ == "__main__":
    sys.exit(main())
