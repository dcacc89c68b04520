"""`python -m docker0_2013` is the `docker0` command."""
from .cli import main

main()
