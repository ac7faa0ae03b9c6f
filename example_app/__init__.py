"""The tiny WSGI app deploytool's own example deploys (see hosts.yml and etc-mock/)."""
