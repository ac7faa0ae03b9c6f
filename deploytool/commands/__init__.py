"""The ``fab`` tasks: deploytool's only public face (``from deploytool import ns``).

`tasks` holds the collection (and ``version``); `tasks_deploy` deploy and rollback; `tasks_releases` releases
and log; `tasks_lock` lock and unlock; `tasks_etc` render-etc; `tasks_mirror` the ``requirements.*`` and
``mirror.*`` tasks; `tasks_status` ``status`` and ``audit``; `tasks_run` ``run``; `common` what every task shares
(finding hosts.yml, choosing hosts, running on each, option help); `confirm` the ``confirm: true`` question;
`typos` deploytool's errors for unknown tasks and options. Errors become ``Error: ...`` at `errors.task_boundary`.
"""
