"""The Python tests as a package, for `python3 -m unittest tests.test_x.Class.test_y` from the
top of the tree: the tests import their helpers (daemon_util) by plain name."""
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
# tests/ for the helpers; tools/ for the converter (rnnd_convert), which some tests import
# before daemon_util, whose own path set-up would come too late for them
for _p in (os.path.join(os.path.dirname(_HERE), "tools"), _HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)
