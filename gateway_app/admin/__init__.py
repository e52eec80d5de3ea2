"""The control plane's admin side: the JSON admin API (api.py) and its areas (*_routes.py),
sessions and admin users, shared by the admin UI (gateway_app.admin_ui) and the CLI."""
