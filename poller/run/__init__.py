"""One run: the composition root (`pipeline`), where reading starts and the marks move
(`marks`), the read phase (`reading`, `scan`), what a new call gets (`enrich`), the delivery
phase (`delivery`, `incident_delivery`), the dry run's ledger (`dryrun`), what a run is asked and
did (`report`), the run lock (`lock`), follow mode (`follow`) and metrics (`metrics`).

Imports every room below it (config, source, ledger, recordings, callers, targets); nothing but
the operations and the command line imports it."""
