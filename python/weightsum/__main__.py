"""`python -m weightsum ARGS...` (and the `weightsum` console script of a pip install) run the
weightsum CLI that ships inside the package, with the same arguments and exit code
(0 = match, 1 = mismatch, 2 = trouble)."""
from __future__ import annotations

import os
import sys
from typing import List, Optional

_HERE = os.path.dirname(os.path.abspath(__file__))


def cli_path() -> str:
    """The CLI binary: $WEIGHTSUM_BIN, else the one inside the package (a pip install), else
    ../../build/weightsum (a source checkout built with scripts/build.sh)."""
    env = os.environ.get("WEIGHTSUM_BIN")
    if env:
        return env
    for path in (os.path.join(_HERE, "bin", "weightsum"),
                 os.path.normpath(os.path.join(_HERE, "..", "..", "build", "weightsum"))):
        if os.access(path, os.X_OK):
            return path
    raise FileNotFoundError("the weightsum CLI is not inside this package (install it with "
                            "`pip install ./python`, or build it with scripts/build.sh, or set "
                            "WEIGHTSUM_BIN)")


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        path = cli_path()
    except FileNotFoundError as e:
        print(f"weightsum: {e}", file=sys.stderr)
        return 2
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(path, [path] + args)  # replaces this process: its exit code is the CLI's
    return 2  # not reached


if __name__ == "__main__":
    sys.exit(main())
