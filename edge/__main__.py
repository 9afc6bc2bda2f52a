import sys

from happysad.edge.cli.parser import main

sys.exit(main())
