"""Asking hosts what they run, changing nothing.

`survey` runs the host-side ``survey`` module (one round trip per host) and validates every field it answers;
`status` (``fab status``) and `audit` (``fab audit``) turn surveys into rows and findings.
"""
