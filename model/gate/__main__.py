import sys

from model.gate.cli import main

sys.exit(main())
