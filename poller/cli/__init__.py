"""The `poller` command: a thin click layer (`main`, with the demo and archive commands in
`extras`), the one place errors become exit codes (`guard`), and the manual page written from the
commands (`manpage`)."""
