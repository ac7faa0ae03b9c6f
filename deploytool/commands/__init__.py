"""The ``fab`` tasks: deploytool's only public face (``from deploytool import ns``).

`tasks` holds deploy, rollback, releases, lock and unlock, render-etc and the collection; `tasks_mirror` the
``requirements.*`` and ``mirror.*`` tasks; `tasks_status` ``status`` and ``audit``; `common` what every task
shares (finding hosts.yml, choosing hosts, option help); `confirm` the ``confirm: true`` question; `typos`
deploytool's errors for unknown tasks and options. Errors become ``Error: ...`` at `errors.task_boundary`.
"""
