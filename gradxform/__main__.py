"""``python -m gradxform demo``: see :mod:`gradxform.demo`."""

import sys

from gradxform.demo import main

if __name__ == "__main__":
    sys.exit(main())
