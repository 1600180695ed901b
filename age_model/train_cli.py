"""Fine-tune an image backbone (default: ResNet-50) as a face age estimator with the Trainer API.

The `agecheck-train` command and `train.py`. `--help` shows agecheck's options and the Trainer
options people change most; `--help-all` every transformers TrainingArguments option as well.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from transformers import HfArgumentParser

from age_model.training import AgeTrainingArguments, DataArguments, ModelArguments, run_training

PROG = "agecheck-train"
USAGE = f"{PROG} --data DATA [--data DATA ...] [--base-model MODEL] [--output-dir DIR] [options]"
EXAMPLES = f"""examples:
  {PROG} --data path/to/appa-real-release --output-dir runs/appa
  {PROG} --data ../shared/data/utkface --base-model ../shared/weights/efficientnet-lite0 \\
      --image-size 160 --max-steps 300 --output-dir runs/utk
  {PROG} --data ../shared/data/utkface --base-model ../shared/weights/efficientnet-lite0 --image-size 160 \\
      --max-steps 20 --max-train-samples 640 --max-eval-samples 200 --output-dir runs/smoke   # a CPU smoke run
  torchrun --nproc-per-node 4 -m age_model.train_cli --data ... --output-dir runs/ddp       # several GPUs (DDP)
(from a clone without `pip install .`: .venv/bin/python train.py ...)"""
TRAINING_ARGUMENTS_URL = "https://huggingface.co/docs/transformers/main_classes/trainer#transformers.TrainingArguments"

# The Trainer options shown in the short --help: the ones agecheck sets a default for, then the everyday ones.
COMMON_TRAINING_OPTIONS = (
    "output_dir",
    "num_train_epochs",
    "max_steps",
    "learning_rate",
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
    "weight_decay",
    "warmup_steps",
    "lr_scheduler_type",
    "eval_strategy",
    "save_strategy",
    "eval_steps",
    "save_steps",
    "metric_for_best_model",
    "save_total_limit",
    "seed",
    "fp16",
    "bf16",
    "dataloader_num_workers",
    "channels_last",
    "resume_from_checkpoint",
    "push_to_hub",
    "hub_model_id",
    "hub_private_repo",
    "report_to",
)
GROUPS = (
    ("data: where the faces come from", DataArguments),
    ("model: backbone, head and the preprocessing saved with it", ModelArguments),
)


class OneSpellingFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Each option under one name, the dashed one (`--base-model`), with its default.

    The parser also accepts transformers' underscore spelling (`--base_model`) so older scripts keep
    working; help and docs only ever show the dashed one.
    """

    def _format_action_invocation(self, action: argparse.Action) -> str:
        dashed = [s for s in action.option_strings if "_" not in s] or action.option_strings
        if len(dashed) == len(action.option_strings):
            return super()._format_action_invocation(action)
        shown = argparse.Action(dashed[:1], action.dest, nargs=action.nargs, metavar=action.metavar)
        return super()._format_action_invocation(shown)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS, []) or "default" in text.lower():
            return text.replace("%", "%%")
        return text.replace("%", "%%") + " (default: %(default)s)"


def build_parser() -> HfArgumentParser:
    return HfArgumentParser(
        (DataArguments, ModelArguments, AgeTrainingArguments),
        prog=PROG,
        usage=USAGE,
        description=(__doc__ or "").split("\n\n")[0],
        epilog=EXAMPLES,
        formatter_class=OneSpellingFormatter,
        add_help=False,
    )


def short_help(parser: argparse.ArgumentParser) -> str:
    """agecheck's options by group, the common Trainer options, and where the rest are listed."""
    actions = {action.dest: [] for action in parser._actions}
    for action in parser._actions:
        if not any(s.startswith(("--no_", "--no-")) for s in action.option_strings):
            actions[action.dest].append(action)
    formatter = parser._get_formatter()
    formatter.add_usage(USAGE, [], [])
    formatter.add_text(parser.description)
    for title, dataclass in GROUPS:
        formatter.start_section(title)
        formatter.add_arguments([a for name in dataclass.__dataclass_fields__ for a in actions.get(name, [])])
        formatter.end_section()
    formatter.start_section("training: agecheck's defaults and the everyday Trainer options")
    formatter.add_arguments([a for name in COMMON_TRAINING_OPTIONS for a in actions.get(name, [])])
    formatter.end_section()
    formatter.add_text(
        "Every other transformers TrainingArguments option works too (--gradient-accumulation-steps, "
        f"--optim, --torch-compile, ...): `{PROG} --help-all` lists them all, and so does {TRAINING_ARGUMENTS_URL}. "
        "On a CPU, --max-eval-samples keeps evaluation short (a smoke run otherwise spends most of its time "
        "evaluating the full validation and test splits). More in the README, section 'Training'."
    )
    formatter.add_text(EXAMPLES)
    return formatter.format_help()


def parse(argv: Sequence[str] | None = None) -> tuple[DataArguments, ModelArguments, AgeTrainingArguments]:
    """The three argument dataclasses; `-h/--help` and `--help-all` print and exit."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if "--help-all" in argv:
        parser.print_help()
        raise SystemExit(0)
    if "-h" in argv or "--help" in argv:
        print(short_help(parser))
        raise SystemExit(0)
    data_args, model_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    return data_args, model_args, training_args


def main(argv: Sequence[str] | None = None) -> int:
    data_args, model_args, training_args = parse(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    metrics = run_training(data_args, model_args, training_args)
    if training_args.should_save:  # one line from the main process, not one per rank
        print(
            f"test MAE {metrics['test_mae']:.2f} years (CS@5 {metrics['test_cs5']:.3f}); "
            f"model saved to {training_args.output_dir}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
