"""Expose the mock /etc API: render ``etc-mock/`` per host, ship it, install it, diff it.

The work is split in two modules, one concept each:

* :mod:`deploytool.rendering.etc_render` -- render templates to a :class:`RenderedEtc` (and the list of
  variables templates can use), write it to a local dir, pack it as a tar;
* :mod:`deploytool.rendering.etc_install` -- the installer's arguments (its rules; the host-side module
  ``publish`` runs it at the switch), and the diff of a render against the host's current files.
"""

from deploytool.rendering.etc_install import FileDiff, diff_against, format_diffs, install_args
from deploytool.rendering.etc_render import (
    EtcPathError,
    RenderedEtc,
    RenderErrors,
    TemplateError,
    render_all,
    render_host,
    tar_bytes,
    write_tree,
)

__all__ = [
    "EtcPathError",
    "FileDiff",
    "RenderErrors",
    "RenderedEtc",
    "TemplateError",
    "diff_against",
    "format_diffs",
    "install_args",
    "render_all",
    "render_host",
    "tar_bytes",
    "write_tree",
]
