"""The deploy flow: a run across a stage's hosts, phase by phase.

`release` mints the release (id, commit, who, when) and `snapshot` reads files as committed; `deploy` holds only
the two flows (deploy and rollback); `phases` the prepare steps of one host (check, push, build) run as host-side
modules; `target` the model of one host in a run (`Target`, `HostState`); `deploylock` the deploy lock (take,
take over, unlock, `LostRun`); `publish` the laptop's half of the host-side ``publish`` module (switch, restart,
health); `rollout` publishing batch by batch and reverting; `golive` the restart and health-check settings and
batch sizes; `journal` the per-host journal and its entries; `sudo` the run's sudo password; `dryrun` what a
deploy would change. The vocabulary of phases is `reporting.events`'s.
"""
