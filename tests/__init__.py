"""The Python tests as a package, for `python3 -m unittest tests.test_x.Class.test_y` from the
top of the tree: the tests import their helpers (daemon_util) by plain name."""
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
