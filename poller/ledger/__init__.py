"""The poller's own state: the watermark and one row per call with its stage (`store`), the
tables and their upgrades (`schema`), read-only opening (`access`), the typed key/value settings
(`settings`), incidents (`incidents`), and the journal of steps the state database could not take
yet (`journal`).

Imports the configuration, the callers' incident rule and the top-level modules; never the run,
a source or a target."""
