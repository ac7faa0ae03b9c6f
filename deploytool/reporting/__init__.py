"""What the user sees of a run.

`events` is the one stream of per-host events (host, phase, result, time, reason) and the names of the phases;
`report` makes progress lines, the summary table and ``--json`` from it; `tables` lays out plain-text tables;
`terminal` is the one sanitiser for anything a host said before it is printed; `notify` runs the stage's
``notify`` commands with the run's ``--json`` document when a deploy or rollback ends.
"""
