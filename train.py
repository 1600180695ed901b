#!/usr/bin/env python
"""Fine-tune an image backbone (default: ResNet-50) as a face age estimator with the Trainer API.

Examples:
  python train.py --data path/to/appa-real-release --output-dir runs/appa
  python train.py --data ../shared/data/utkface --base-model ../shared/weights/efficientnet-lite0 \\
      --image-size 160 --max-steps 300 --output-dir runs/utk
  torchrun --nproc-per-node 4 train.py --data ... --output-dir runs/ddp      # several GPUs (DDP)

Every transformers TrainingArguments option passes through (--learning-rate, --num-train-epochs,
--push-to-hub, --hub-model-id, --resume-from-checkpoint last, ...).
"""

import logging
import sys

from transformers import HfArgumentParser

from age_model.training import AgeTrainingArguments, DataArguments, ModelArguments, run_training


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser((DataArguments, ModelArguments, AgeTrainingArguments), description=__doc__.split("\n\n")[0])
    data_args, model_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    metrics = run_training(data_args, model_args, training_args)
    print(f"test MAE {metrics['test_mae']:.2f} years (CS@5 {metrics['test_cs5']:.3f}); model saved to {training_args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
