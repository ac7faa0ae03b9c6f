"""Host-side modules: real Python programs of this package, shipped to a host and run there, answering JSON.

A module is a standard-library-only file here (``deploytool/hostside/<name>.py``) with a ``main(args)`` returning
a JSON-able dict and ``_common.serve(main)`` as its ``__main__``. Helpers they share live in `_common` and are
shipped with every module that imports them; the laptop's runner is `deploytool.connection.hostrun`. Modules
run with the host's ``python3`` (hosts.yml ``python``), so they keep to Python 3.8 syntax and the standard
library, and are unit-tested locally by importing them (``from deploytool.hostside import state``).

Nothing in this package runs on the laptop during a deploy.
"""
