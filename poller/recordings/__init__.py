"""A call's recording: finding and settling its files (`files`), reading what MixMonitor writes
(`audio`, `formats`), and the low-priority encoder child that makes one MP3 (`encoder`,
`transcode`).

Imports the configuration and the top-level modules only."""
