import sys

from spanwatch.daemon import main

sys.exit(main())
