#!/usr/bin/env python
"""Thin wrapper of ``rsfiqa evaluate`` (see ``modeling_rsfiqa/cli_evaluate.py``):

python examples/evaluate.py --model outputs/rsfiqa-clive --data ../shared/data/clive-train --out eval-clive
"""

import sys

from modeling_rsfiqa.cli_evaluate import main

if __name__ == "__main__":
    sys.exit(main())
