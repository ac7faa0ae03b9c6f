"""The supply chain: what a release installs, and where it comes from.

Pinned role requirement files and their rules (`requirements`, the laptop-side check in `pins`, resolving a
short ``.in`` into a pinned file in `reqlock`), what a wheel declares (`wheelmeta`), the internal wheelhouse
(`mirror`: sync from upstream, serve, publish, hash; `mirror_index` and `simple_api` read and write indexes;
`mirror_verify` re-checks what came from upstream; `index_upload` publishes to an index server), and the
installer a host uses with its arguments (`installer`: pip or uv, ``--no-index``, hashes). Nothing here
touches a deploy's hosts except through the argument lists it hands to the flow.
"""
