import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

PLUGIN_PATH = os.path.join(ROOT, "cl-revenue-ops.py")
SAMPLES_DIR = os.path.join(ROOT, "tests", "fixtures", "cln-samples")  # copied from shared/cln-samples
