"""The web dashboard (`metalearn ui`): attempts, live curves, comparisons, studies and
similar tasks in a browser.

It is one more gRPC client of the gateway — no database, no torch — that renders pages
on the server and adds a little JavaScript for the charts (plotly, vendored) and the
live parts (server-sent events fed by the gateway's Watch RPCs). Every call it makes
carries the signed-in user's own token, so a page shows and does exactly what that
token may.

    config.py    UiConfig, the frozen settings
    gateway.py   the gRPC calls, with the user's token; errors become GatewayError
    security.py  sign-in cookie, CSRF, Content-Security-Policy and other headers
    views.py     protos -> what templates and charts show (pure functions)
    study_pages.py  the same for studies: trials, history, parameter axes
    importance.py   Optuna's parameter importances of a study, computed here
    listing.py   the attempts table's query, and the table as CSV
    streams.py   server-sent events from Watch streams, watched again after a restart
    actions.py   what users change: cancel, test, tags and note, train a suggestion
    app.py       the routes: create_app(config)
    server.py    create_server (tests start it on port 0); `metalearn ui` runs it
                 (its flags live in metalearn/cli/ui.py, beside the other commands)
"""
