"""The launch key: how `metalearn up` signs the local browser in to the dashboard once.

`metalearn up` starts `metalearn ui --launch-token-file FILE` with a random key in
`LAUNCH_KEY_ENV`, and prints a link that carries it; the dashboard signs in with the
token from FILE whoever opens that link within `LAUNCH_KEY_MINUTES` of its start. Shared
by the CLI and the dashboard, so that neither imports the other.
"""

LAUNCH_KEY_ENV = "METALEARN_UI_LAUNCH_KEY"
LAUNCH_KEY_MINUTES = 10  # the key signs in once, within this long of the dashboard's start
