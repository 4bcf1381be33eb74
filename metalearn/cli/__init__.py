"""The `metalearn` command (`python -m metalearn.cli`, or the `metalearn` script).

`main` parses the arguments and runs a command; each group of commands lives in its own
module here (`runs`: train, test, watch…; `study`, `task`, `curve`, `history`, `changes`,
`examples`, `security`, `stack`: `metalearn up`; `ui`: the dashboard). Text that the
dashboard shows as well comes from `metalearn.views`, never from here.
"""

from metalearn.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
