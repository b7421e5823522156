import sys

from radpair.cli import main

sys.exit(main())
