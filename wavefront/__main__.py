import sys

from wavefront.cli import main

sys.exit(main())
