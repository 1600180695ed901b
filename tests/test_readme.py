"""The README's commands run as written: the venv's interpreter or the console scripts, options that exist."""

from __future__ import annotations

import re

import yaml

from age_model import app
from age_model.train_cli import build_parser as train_parser
from tests.conftest import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")


def command_lines() -> list[str]:
    """Shell lines of the README's bash blocks, continuation lines joined."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def test_commands_use_the_venv_or_the_console_scripts():
    bare = [line for line in command_lines() if re.match(r"^(python3?|torchrun|pip) ", line)]
    assert not bare, f"these fail without an activated venv: {bare}"


def test_every_option_the_readme_gives_exists_in_its_one_spelling():
    parsers = {
        "train.py": train_parser(),
        "agecheck-train": train_parser(),
        "app.py": app.build_parser(),
        "agecheck-app": app.build_parser(),
    }
    checked = 0
    for line in command_lines():
        for command, parser in parsers.items():
            if re.search(rf"(^|[ /]){re.escape(command)}( |$)", line):
                known = {s for action in parser._actions for s in action.option_strings if "_" not in s}
                known |= {"--help", "--help-all"}
                for option in re.findall(r"(?<![\w-])--[\w-]+", line.split(command, 1)[1]):
                    assert option in known, f"{command} has no option {option} (README: {line})"
                    checked += 1
    assert checked > 20


def test_space_front_matter():
    front = yaml.safe_load(README.split("---\n")[1])
    assert front["sdk"] == "gradio" and (REPO_ROOT / front["app_file"]).is_file()
    assert str(front["python_version"]) == "3.11"
    pinned = re.search(r"^gradio(?:\[oauth\])?==(\S+)", (REPO_ROOT / "requirements.txt").read_text(), flags=re.M).group(
        1
    )
    assert front["sdk_version"] == pinned
