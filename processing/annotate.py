"""Annotate every region of every image of a folder or dataset with an MLLM (cached, resumable).

    python processing/annotate.py --model DIR --data DIR --out DIR
    accelerate launch --num_processes 2 processing/annotate.py --model DIR --data DIR --out DIR
    accelerate launch --num_processes 8 processing/annotate.py --model MLLM_DIR --dtype bfloat16 \\
        --partition sam --sam-model SAM_DIR --regions-from rsfiqa-paper --data DIR --out STORE

Process ``r`` of ``n`` takes items ``r, r+n, ...`` (each loads the MLLM and, for ``--partition sam``, the SAM
model on its own device); the main process compacts the store at the end. Thin wrapper over
``modeling_rsfiqa.cli_annotate`` (the same as ``rsfiqa annotate``).
"""

import sys

from modeling_rsfiqa.cli_annotate import main

if __name__ == "__main__":
    sys.exit(main())
