-- ListAttempts.filter: SQL/JSON path predicates (`doc @@ path`, `doc @? path`) over the
-- document, served by one GIN index of every path and value in it.
CREATE INDEX attempts_doc_paths ON attempts USING gin (doc jsonb_path_ops);
