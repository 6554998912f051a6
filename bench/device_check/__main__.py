"""python3 bench/device_check [...] (or python3 -m bench.device_check [...]): see __init__.py."""

import sys
from pathlib import Path

if __package__:
    from .run import main
else:  # python3 bench/device_check: the folder runs as a script; import it as the package device_check
    sys.path[0] = str(Path(__file__).resolve().parents[1])
    from device_check.run import main

sys.exit(main())
