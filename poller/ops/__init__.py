"""What an administrator runs beside the job: `status`, `check`, the sample PBX of `demo`, and
the refusal to run as root on the service user's files (`privileges`).

Imports the run and the rooms below it; only the command line imports it."""
