"""Deploy the Django demo with deploytool: `fab --list`."""

from deploytool import ns  # noqa: F401 - fab finds the collection by this name
