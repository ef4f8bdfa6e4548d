"""`python -m poller.cli`: the `poller` command, where its script is not on PATH."""

from poller.cli.main import main

main()
