"""The config of a release, rendered on the laptop.

`etc_render` renders the mock /etc (``etc-mock/``) for one host; `etc` is the API the flows use (render, ship,
install arguments, diffs); `etc_install` previews and installs a release's ``etc/`` through the host-side
module of the same name; `shell_templates` renders hosts.yml's commands with every value shell-quoted;
`config` gathers a release's template variables and renders every host up front, before any host is touched.
"""
