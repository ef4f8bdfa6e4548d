"""The configuration: the TOML file read once at start into frozen dataclasses (`schema`),
converted value by value (`convert`), checked against the rules between keys (`checks`), with
the value types of its own (`hours`). `load` is the way in.

Imports only the modules at the package's top (errors, model, clock, databases, templates):
every other folder imports the schema, never the reverse."""
