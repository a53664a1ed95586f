"""Where the recorded data sets are (../shared/data beside the repository, or the folder
NIGHTLINK_SHARED_DATA names): tests that need them skip, saying so, where they are absent."""

import os
from pathlib import Path

from tests.support.micropython import ROOT

SHARED = Path(os.environ.get("NIGHTLINK_SHARED_DATA") or ROOT.parent / "shared" / "data")
