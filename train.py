#!/usr/bin/env python
"""Fine-tune an age estimator (the same as the `agecheck-train` command): `.venv/bin/python train.py --help`.

Several GPUs: `torchrun --nproc-per-node 4 train.py --data ... --output-dir runs/ddp`.
"""

import sys

from age_model.train_cli import main

if __name__ == "__main__":
    sys.exit(main())
