#!/usr/bin/env python
"""Serve agecheck in the browser (the same as the `agecheck-app` command): `.venv/bin/python app.py --help`.

Also the app_file of the Hugging Face Space (see the README's front matter).
"""

import sys

from age_model.app import main

if __name__ == "__main__":
    sys.exit(main())
