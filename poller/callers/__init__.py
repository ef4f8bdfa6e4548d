"""Who called, and what follows: caller numbers in E.164 (`numbers`), the directory of known
callers with its readers and its saved copy (`directory`, `readers`, `cache`, `caller`), and the
incident rule (`incidents`).

Imports the configuration and the top-level modules only."""
