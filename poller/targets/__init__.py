"""Where calls go: the small interface every target keeps (`interface`), the configured one by
kind (`kinds`), and one folder per target (`archive/`, `easla/`).

A target imports the configuration, the model and the top-level modules; never the ledger or
the run."""
