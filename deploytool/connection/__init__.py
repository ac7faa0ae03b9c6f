"""The connection to hosts: how the laptop reaches them and runs things there.

`sshconfig` resolves where a host really is (hosts.yml over ssh_config, through OpenSSH itself); `transport`
opens connections (SSH with host keys checked, or this machine for a local stage), bounds answers and names
failures; `hostrun` ships a host-side module with the helpers it imports and reads its JSON answer; `remote`
streams payloads on stdin; `fleet` runs one function on many hosts in parallel and gathers every failure.
"""
