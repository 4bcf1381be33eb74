"""Example data made offline: the meta-learning suite's task family, its command grid and
its recorded history (`metalearn examples import-history`), and a task none of it has seen
(`metalearn examples import-letters`)."""
