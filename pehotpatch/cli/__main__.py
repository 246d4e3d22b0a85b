import sys

from pehotpatch.cli import main

sys.exit(main())
