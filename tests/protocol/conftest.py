import sys
from pathlib import Path

# The harness is a helper module beside the tests, not part of the package.
sys.path.insert(0, str(Path(__file__).parent))
